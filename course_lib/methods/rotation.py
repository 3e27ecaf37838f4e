"""Rotation prediction (3DRotNet: Jing & Tian, *Self-supervised Spatiotemporal Feature
Learning via Video Rotation Prediction*, 2018).

Every frame of a clip is rotated by the same multiple of 90 degrees; the network
predicts which of the four. Recognising "upside down" needs object and motion
knowledge (gravity, typical directions of movement).
"""
from __future__ import annotations

import torch
from torch import nn

from .common import accuracy, to_float
from ..runtime import send
from .registry import Method, register_method


def rotate(clips: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate clip i (all its frames) by k[i] * 90 degrees anticlockwise. (B, C, T, H, W), H == W."""
    return torch.stack([torch.rot90(c, int(r), dims=(-2, -1)) for c, r in zip(clips, k)])


@register_method("rotation")
class RotationPrediction(Method):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, 4)

    def forward(self, batch: dict):
        clips = batch["clips"][:, 0]  # B x C x T x H x W (uint8), first clip of each video
        if clips.shape[-1] != clips.shape[-2]:
            raise ValueError(f"rotation needs square frames, got {tuple(clips.shape[-2:])}; decode with size=(s, s).")
        k = torch.randint(0, 4, (clips.shape[0],))  # B, drawn on the host: rotate reads each as a Python int
        logits = self.head(self.backbone(to_float(rotate(clips, k))))  # B x 4
        k = send(k, clips.device)
        loss = nn.functional.cross_entropy(logits, k)
        return loss, {"loss": loss.detach(), "acc": accuracy(logits, k)}
