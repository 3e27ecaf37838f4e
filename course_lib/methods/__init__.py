"""One module per method. ``build_method(name, backbone, ...)`` and the temporal sampler it needs.

Every method is an ``nn.Module`` with ``forward(batch) -> (loss, logs)`` over a batch of
``ClipDataset`` items (``clips`` uint8 (B, S, C, T, H, W), ``frames``, ``label``, ``index``).
"""
from __future__ import annotations

from torch import nn

from ..data.samplers import OrderedClipsSampler, RandomClipSampler, RandomStrideSampler
from .rotation import RotationPrediction
from .speed import SpeedPrediction
from .supervised import Supervised
from .vcop import ClipOrderPrediction

METHODS = ("supervised", "rotation", "vcop", "speed")


def build_method(name: str, backbone: nn.Module, *, num_classes: int | None = None, **kwargs) -> nn.Module:
    if name == "supervised":
        if not num_classes:
            raise ValueError("the supervised method needs num_classes.")
        return Supervised(backbone, num_classes)
    if name == "rotation":
        return RotationPrediction(backbone)
    if name == "vcop":
        return ClipOrderPrediction(backbone, **kwargs)
    if name == "speed":
        return SpeedPrediction(backbone, **kwargs)
    raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}.")


def sampler_for(name: str, *, clip_len: int, stride: int = 1, gap: int | None = None):
    """The training sampler each method needs (VCOP: 3 ordered clips; speed: random strides)."""
    if name == "vcop":
        return OrderedClipsSampler(clip_len=clip_len, stride=stride, num_clips=3,
                                   gap=clip_len // 2 if gap is None else gap)
    if name == "speed":
        return RandomStrideSampler(clip_len=clip_len)
    if name in METHODS:
        return RandomClipSampler(clip_len=clip_len, stride=stride)
    raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}.")


__all__ = ["METHODS", "build_method", "sampler_for", "Supervised", "RotationPrediction", "ClipOrderPrediction",
           "SpeedPrediction"]
