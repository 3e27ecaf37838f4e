"""Supervised classification: the upper bound every self-supervised method is compared with."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .common import accuracy, to_float
from .registry import Method, register_method


@register_method("supervised")
class Supervised(Method):
    """Cross-entropy on the clip labels. ``forward(batch) -> (loss, logs)``."""

    needs = ("num_classes",)

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.feature_dim, num_classes)

    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, C, T, H, W) -> logits averaged over the S clips, (B, num_classes)."""
        b = clips.shape[0]
        x = to_float(rearrange(clips, "b s c t h w -> (b s) c t h w"))
        out = self.classifier(self.backbone(x))  # (B*S) x K
        return rearrange(out, "(b s) k -> b s k", b=b).mean(1)

    def forward(self, batch: dict):
        logits = self.logits(batch["clips"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        return loss, {"loss": loss.item(), "acc": accuracy(logits, batch["label"])}
