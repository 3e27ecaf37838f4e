"""Clip order prediction (VCOP: Xu et al., *Self-supervised Spatiotemporal Learning via
Video Clip Order Prediction*, CVPR 2019).

Three clips sampled in temporal order are shuffled; a shared encoder embeds each, every
pair of embeddings is concatenated and mapped by one layer, and the pair features
together predict which of the 3! = 6 orders was applied.
"""
from __future__ import annotations

import itertools

import torch
from einops import rearrange
from torch import nn

from ..data.samplers import OrderedClipsSampler
from .common import accuracy, to_float
from ..settings import integer, number
from .registry import Method, register_method


@register_method("vcop")
class ClipOrderPrediction(Method):
    option_rules = {"num_clips": integer(2), "hidden": integer(1), "dropout": number(0, 1),
                    "gap": integer(0, optional=True)}
    @classmethod
    def sampler(cls, *, clip_len: int, stride: int = 1, num_clips: int = 3, gap: int | None = None):
        """``num_clips`` clips in temporal order, ``gap`` frames apart (default: half a clip, VCOP's 8 of 16)."""
        return OrderedClipsSampler(clip_len=clip_len, stride=stride, num_clips=num_clips,
                                   gap=clip_len // 2 if gap is None else gap)

    def __init__(self, backbone: nn.Module, *, num_clips: int = 3, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.num_clips = num_clips
        self.register_buffer("orders", torch.tensor(list(itertools.permutations(range(num_clips)))), persistent=False)
        self.pairs = list(itertools.combinations(range(num_clips), 2))
        self.pair_fc = nn.Sequential(nn.Linear(2 * backbone.feature_dim, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden * len(self.pairs), len(self.orders)))

    def forward(self, batch: dict):
        clips = batch["clips"]  # B x N x C x T x H x W, clips in temporal order
        b, n = clips.shape[:2]
        if n != self.num_clips:
            raise ValueError(f"VCOP needs {self.num_clips} ordered clips per video, got {n}.")
        label = torch.randint(0, len(self.orders), (b,), device=clips.device)  # B
        order = self.orders[label]  # B x N: clip order[i, j] goes to position j
        shuffled = clips[torch.arange(b, device=clips.device)[:, None], order]
        f = self.backbone(to_float(rearrange(shuffled, "b n c t h w -> (b n) c t h w")))
        f = rearrange(f, "(b n) d -> b n d", b=b)  # B x N x D
        pair = torch.cat([self.pair_fc(torch.cat([f[:, i], f[:, j]], 1)) for i, j in self.pairs], 1)
        logits = self.classifier(pair)  # B x 6
        loss = nn.functional.cross_entropy(logits, label)
        return loss, {"loss": loss.detach(), "acc": accuracy(logits, label)}
