"""One module per method, behind one registry: ``build_method(name, backbone, ...)`` and ``sampler_for(name, ...)``.

Every method is a ``Method`` (an ``nn.Module``) with ``forward(batch) -> (loss, logs)`` over a
batch of ``ClipDataset`` items (``clips`` uint8 (B, S, C, T, H, W), ``frames``, ``label``,
``index``). Contrastive methods augment on the training device, inside ``forward``. Each
declares its sampler, options and needs on its class (``methods/registry.py``).
"""
from __future__ import annotations

# imported in the order of the course: the registry lists methods in this order
from .supervised import Supervised
from .rotation import RotationPrediction
from .vcop import ClipOrderPrediction
from .speed import SpeedPrediction
from .simclr import SimCLR
from .moco import MoCo
from .iic import IIC
from .cvrl import CVRL
from .dualvar import DualVar
from .byol import BYOL
from .videomae import VideoMAE
from .vjepa import VJEPA
from .registry import Method, build_method, check_options, list_methods, method_class, register_method, sampler_for

METHODS = tuple(list_methods())

__all__ = ["METHODS", "Method", "build_method", "check_options", "list_methods", "method_class", "register_method",
           "sampler_for", "Supervised", "RotationPrediction", "ClipOrderPrediction", "SpeedPrediction", "SimCLR",
           "MoCo", "IIC", "CVRL", "DualVar", "BYOL", "VideoMAE", "VJEPA"]
