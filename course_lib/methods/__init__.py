"""One module per method. ``build_method(name, backbone, ...)`` and the temporal sampler it needs.

Every method is an ``nn.Module`` with ``forward(batch) -> (loss, logs)`` over a batch of
``ClipDataset`` items (``clips`` uint8 (B, S, C, T, H, W), ``frames``, ``label``, ``index``).
Contrastive methods augment on the training device, inside ``forward``.
"""
from __future__ import annotations

import inspect

from torch import nn

from ..augment import AugmentConfig

from ..data.samplers import OrderedClipsSampler, RandomClipSampler, RandomStrideSampler, TemporalIntervalSampler
from .cvrl import CVRL
from .dualvar import DualVar
from .iic import IIC
from .moco import MoCo
from .rotation import RotationPrediction
from .simclr import SimCLR
from .speed import SpeedPrediction
from .supervised import Supervised
from .vcop import ClipOrderPrediction

METHODS = ("supervised", "rotation", "vcop", "speed", "simclr", "moco", "iic", "cvrl", "dualvar")
AUGMENTING = ("simclr", "moco", "iic", "cvrl", "dualvar")
SAMPLER_OPTIONS = ("interval", "power")  # options that go to the sampler (CVRL), not to the method
CLASSES = {"supervised": Supervised, "rotation": RotationPrediction, "vcop": ClipOrderPrediction,
           "speed": SpeedPrediction, "simclr": SimCLR, "moco": MoCo, "iic": IIC, "cvrl": CVRL,
           "dualvar": DualVar}  # methods that crop on the device: decode frames larger than the crop


def build_method(name: str, backbone: nn.Module, *, num_classes: int | None = None, num_videos: int | None = None,
                 size: int = 112, **options) -> nn.Module:
    """The method ``name`` around ``backbone``; ``options`` go to its constructor (e.g. ``intra="shuffle"``).

    ``augment`` may be a mapping: its keys change the method's default ``AugmentConfig``.
    """
    cls = CLASSES.get(name)
    if cls is not None:
        params = inspect.signature(cls).parameters
        unknown = sorted(set(options) - set(params) - {"backbone"})
        if unknown:
            known = ", ".join(p for p in params if p not in ("backbone", "num_classes", "num_videos", "size"))
            raise ValueError(f"method {name} has no option {unknown[0]!r}; its options: {known or 'none'}.")
        if isinstance(options.get("augment"), dict):
            base = params["augment"].default
            changes = {k: tuple(v) if isinstance(v, list) else v for k, v in options["augment"].items()}
            unknown = sorted(set(changes) - set(AugmentConfig.__dataclass_fields__))
            if unknown:
                raise ValueError(f"augment has no setting {unknown[0]!r}.")
            options = {**options, "augment": base.replace(**changes)}
    if name == "supervised":
        if not num_classes:
            raise ValueError("the supervised method needs num_classes.")
        return Supervised(backbone, num_classes, **options)
    if name == "rotation":
        return RotationPrediction(backbone, **options)
    if name == "vcop":
        return ClipOrderPrediction(backbone, **options)
    if name == "speed":
        return SpeedPrediction(backbone, **options)
    if name == "simclr":
        return SimCLR(backbone, size=size, **options)
    if (name in ("moco", "iic") or (name == "dualvar" and options.get("base") == "moco")) and not num_videos:
        raise ValueError(f"the {name} method needs num_videos (the size of the training set).")
    if name == "moco":
        # a queue longer than half the training set holds several keys of each video, which
        # then act as false negatives: on small datasets the queue is cut to fit
        options.setdefault("queue", min(65536, max(1, num_videos // 2)))
        return MoCo(backbone, size=size, **options)
    if name == "iic":
        return IIC(backbone, num_videos=num_videos, size=size, **options)
    if name == "cvrl":
        return CVRL(backbone, size=size, **options)
    if name == "dualvar":
        if options.get("base") == "moco":
            options.setdefault("queue", min(16384, max(1, num_videos // 2)))  # as for moco
        return DualVar(backbone, size=size, **options)
    raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}.")


def sampler_for(name: str, *, clip_len: int, stride: int = 1, gap: int | None = None, interval: str = "decreasing",
                power: float = 1.0):
    """The training sampler each method needs (VCOP: 3 ordered clips; speed: random strides;
    SimCLR and MoCo: two clips at independent random starts; CVRL: two clips whose gap
    follows the ``interval`` density with ``power``)."""
    if name == "cvrl":
        return TemporalIntervalSampler(clip_len=clip_len, stride=stride, mode=interval, power=power)
    if name == "vcop":
        return OrderedClipsSampler(clip_len=clip_len, stride=stride, num_clips=3,
                                   gap=clip_len // 2 if gap is None else gap)
    if name == "speed":
        return RandomStrideSampler(clip_len=clip_len)
    if name in ("simclr", "moco", "dualvar"):
        return RandomClipSampler(clip_len=clip_len, stride=stride, num_clips=2)
    if name in METHODS:
        return RandomClipSampler(clip_len=clip_len, stride=stride)
    raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}.")


__all__ = ["METHODS", "AUGMENTING", "SAMPLER_OPTIONS", "CVRL", "DualVar", "build_method", "sampler_for", "Supervised", "RotationPrediction",
           "ClipOrderPrediction", "SpeedPrediction", "SimCLR", "MoCo", "IIC"]
