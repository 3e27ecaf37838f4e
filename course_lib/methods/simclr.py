"""SimCLR on clips (Chen et al., *A Simple Framework for Contrastive Learning of Visual
Representations*, ICML 2020), as the video baseline of CVRL and DualVar.

Two augmented clips of each video are encoded by the backbone and an MLP projector; the
NT-Xent loss pulls each pair together and pushes it from the other 2N - 2 clips of the
batch. The backbone's pooled feature is the representation; the projector is dropped.
``debias`` adds a published fix for the static shortcut (``course_lib.debias``); view 1 is the
one BE and FAME change, and with ``intra`` each sample's intra-negative goes through the
backbone and projector like the views, gradients included.
"""
from __future__ import annotations

from torch import nn

from .. import debias as fixes
from ..augment import AugmentConfig, VideoAugment
from ..losses import nt_xent, positive_rank_accuracy
from .common import mlp, normalize, two_views
from .registry import Method, register_method


@register_method("simclr", augments=True)
class SimCLR(Method):
    option_rules = {"debias": fixes.rule()}
    clips_per_video = 2  # two moments of the video

    def __init__(self, backbone: nn.Module, *, size: int = 112, augment: AugmentConfig = AugmentConfig(),
                 dim: int = 128, hidden: int | None = None, temperature: float = 0.1, debias: str | list = "none"):
        super().__init__()
        self.backbone = backbone
        d = backbone.feature_dim
        self.projector = mlp([d, hidden or d, dim], batch_norm=True)
        self.augment = VideoAugment(augment, size=size)
        self.temperature, self.debias = temperature, fixes.Debias(debias)

    def embed(self, x):
        """Clips B x C x T x H x W in [0, 1] -> projections B x dim; None stays None."""
        return None if x is None else self.projector(self.backbone(normalize(x)))

    def forward(self, batch: dict):
        x1, x2 = two_views(batch, self.augment, self.debias)  # B x C x T x H x W each, in [0, 1]
        x1, x2, xn = self.debias.seen(x1, x2, self.debias.negative(x1))
        z1, z2, zn = self.embed(x1), self.embed(x2), self.embed(xn)  # B x dim each (zn: None without intra)
        loss = nt_xent(z1, z2, self.temperature, negatives=zn)
        return loss, {"loss": loss.detach(), "acc": positive_rank_accuracy(z1, z2), **self.debias.logs(z1, z2, zn)}
