"""Playback speed prediction (Pace: Wang et al., *Self-supervised Video Representation
Learning by Pace Prediction*, ECCV 2020; SpeedNet: Benaim et al., CVPR 2020).

The sampler draws each clip with a random frame stride from ``strides``; the network
predicts which. Telling 1x from 4x playback requires knowing how fast things move.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.samplers import RandomStrideSampler
from .common import accuracy, to_float
from ..settings import int_list
from .registry import Method, register_method


@register_method("speed")
class SpeedPrediction(Method):
    option_rules = {"strides": int_list(1, example="[1, 2, 4, 8]")}
    @classmethod
    def sampler(cls, *, clip_len: int, stride: int = 1, strides=(1, 2, 4, 8)):
        """One clip per video at a frame stride drawn from ``strides`` (``stride`` is not used)."""
        return RandomStrideSampler(clip_len=clip_len, strides=tuple(strides))

    def __init__(self, backbone: nn.Module, *, strides=(1, 2, 4, 8)):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("strides", torch.tensor(strides), persistent=False)
        self.head = nn.Linear(backbone.feature_dim, len(strides))

    def labels(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T) frame indices -> index of their stride in ``strides``.

        The stride is the one of ``strides`` that most forward steps take (the smallest on a tie);
        a short video whose indices wrap around has one backward step, which no stride matches.
        A clip with no step in ``strides`` is a ValueError on the CPU; on a GPU (where checking
        would wait for it) it gets -100, which the loss ignores.
        """
        steps = frames[:, 1:] - frames[:, :-1]  # B x (T-1)
        counts = (steps[:, :, None] == self.strides).sum(1)  # B x len(strides): steps of each stride
        known = counts.amax(1) > 0
        if frames.device.type == "cpu" and not known.all():
            raise ValueError(f"clips with frame steps {steps[~known].tolist()} have no stride in {self.strides.tolist()}.")
        return torch.where(known, counts.argmax(1), -100)  # -100: cross_entropy's ignore_index

    def forward(self, batch: dict):
        clips, frames = batch["clips"][:, 0], batch["frames"][:, 0]  # B x C x T x H x W, B x T
        label = self.labels(frames)
        logits = self.head(self.backbone(to_float(clips)))  # B x len(strides)
        loss = nn.functional.cross_entropy(logits, label)
        return loss, {"loss": loss.detach(), "acc": accuracy(logits, label)}
