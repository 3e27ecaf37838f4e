"""Supervised classification: the upper bound every self-supervised method is compared with,
and the model that fine-tuning trains.

Frames decoded at the network's size go in as they are. For fine-tuning, ``augment`` crops
(and flips) training clips on the device from larger frames, and test clips larger than
``size`` are centre-cropped, as IIC's and DualVar's fine-tuning scripts do (random crop of
112 from 128 x 171 frames for training, the centre crop for testing). ``view="residual"``
feeds residual frames instead of RGB (IIC's fine-tuning on residual input).
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..augment import AugmentConfig, VideoAugment, center_crop, residual_frames
from .common import accuracy, normalize
from ..settings import one_of
from .registry import Method, register_method

VIEWS = ("rgb", "residual")


@register_method("supervised")
class Supervised(Method):
    """Cross-entropy on the clip labels. ``forward(batch) -> (loss, logs)``."""
    option_rules = {"view": one_of(VIEWS)}

    needs = ("num_classes",)

    def __init__(self, backbone: nn.Module, num_classes: int, *, size: int | None = None,
                 augment: AugmentConfig | None = None, view: str = "rgb"):
        super().__init__()
        if view not in VIEWS:
            raise ValueError(f"supervised view {view!r} is not one of {', '.join(VIEWS)}.")
        if augment is not None and size is None:
            raise ValueError("supervised training with augment needs the crop size.")
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.feature_dim, num_classes)
        self.augment = VideoAugment(augment, size=size) if augment is not None else None
        self.size, self.view = size, view

    def inputs(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x T x H x W -> the network's normalised float input, N x C x T x size x size."""
        if self.training and self.augment is not None:
            x = self.augment(clips)  # a random crop (and flip) per clip, in [0, 1]
        else:
            x = clips.float() / 255
            if self.size and min(x.shape[-2:]) > self.size:
                x = center_crop(x, self.size)
        return normalize(residual_frames(x) if self.view == "residual" else x)

    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, C, T, H, W) -> logits averaged over the S clips, (B, num_classes)."""
        b = clips.shape[0]
        x = self.inputs(rearrange(clips, "b s c t h w -> (b s) c t h w"))
        out = self.classifier(self.backbone(x))  # (B*S) x K
        return rearrange(out, "(b s) k -> b s k", b=b).mean(1)

    def forward(self, batch: dict):
        logits = self.logits(batch["clips"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        return loss, {"loss": loss.detach(), "acc": accuracy(logits, batch["label"])}
