"""SimCLR on clips (Chen et al., *A Simple Framework for Contrastive Learning of Visual
Representations*, ICML 2020), as the video baseline of CVRL and DualVar.

Two augmented clips of each video are encoded by the backbone and an MLP projector; the
NT-Xent loss pulls each pair together and pushes it from the other 2N - 2 clips of the
batch. The backbone's pooled feature is the representation; the projector is dropped.
"""
from __future__ import annotations

from torch import nn

from ..augment import AugmentConfig, VideoAugment
from ..losses import nt_xent, positive_rank_accuracy
from .common import mlp, normalize, two_views
from .registry import Method, register_method


@register_method("simclr", augments=True)
class SimCLR(Method):
    clips_per_video = 2  # two moments of the video

    def __init__(self, backbone: nn.Module, *, size: int = 112, augment: AugmentConfig = AugmentConfig(),
                 dim: int = 128, hidden: int | None = None, temperature: float = 0.1):
        super().__init__()
        self.backbone = backbone
        d = backbone.feature_dim
        self.projector = mlp([d, hidden or d, dim], batch_norm=True)
        self.augment = VideoAugment(augment, size=size)
        self.temperature = temperature

    def forward(self, batch: dict):
        x1, x2 = two_views(batch, self.augment)  # B x C x T x H x W each, in [0, 1]
        z1 = self.projector(self.backbone(normalize(x1)))  # B x dim
        z2 = self.projector(self.backbone(normalize(x2)))  # B x dim
        loss = nt_xent(z1, z2, self.temperature)
        return loss, {"loss": loss.detach(), "acc": positive_rank_accuracy(z1, z2)}
