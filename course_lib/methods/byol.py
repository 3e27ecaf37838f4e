"""rho-BYOL on clips (Feichtenhofer, Fan, Xiong, Girshick, He, *A Large-Scale Study on
Unsupervised Spatiotemporal Representation Learning*, CVPR 2021; BYOL: Grill et al.,
*Bootstrap Your Own Latent*, NeurIPS 2020).

``rho`` clips are drawn from each video at random moments, and every ordered pair of them
is a positive: the *online* network (backbone, projector, predictor) predicts, from clip
i, the *target* network's projection of clip j. The target is an exponential moving
average of the online backbone and projector, with a momentum annealed from ``momentum``
up to 1 along a cosine over training, and it gets no gradient. There are no negatives:
what keeps the embedding from collapsing to one point is the predictor together with the
slowly moving target. ``predictor=False`` or ``momentum=0`` (the target is the online
network itself, under a stop-gradient) take those pieces away, as the BYOL notebook measures.

The projector and the predictor start as SlowFast's (``head_init``). ``debias`` adds a published
fix for the static shortcut (``course_lib.debias``): BE and FAME change the first clip (for the
online and the target network alike), ``residual`` every clip; ``intra`` adds negatives, and BYOL
has none, so it is refused.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import debias as fixes
from ..augment import AugmentConfig, VideoAugment
from ..data.samplers import RandomClipSampler
from ..distributed import gather_no_grad
from ..losses import (byol_loss, cosine_momentum, effective_rank, embedding_std, momentum_update,
                      positive_rank_accuracy)
from .common import mlp, normalize
from ..settings import integer, number
from .registry import Method, register_method


def head_init(head: nn.Module) -> nn.Module:
    """SlowFast's initialisation of rho-BYOL's projector and predictor (facebookresearch/SlowFast 287ec00): every
    linear layer of an ``MLPHead`` is marked ``xavier_init`` (``slowfast/models/head_helper.py``), so the
    backbone's ``init_weights`` gives it fvcore's ``c2_xavier_fill`` (``slowfast/utils/weight_init_helper.py``), that
    is ``kaiming_uniform_(a=1)``: weights uniform in +-sqrt(3 / fan_in), biases 0. (PyTorch's default is
    +-1 / sqrt(fan_in) for both, and ``MODEL.FC_INIT_STD`` is for linear layers not so marked.) BatchNorm: scale 1,
    shift 0, PyTorch's default too. Returns ``head``, initialised in place."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=1)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head


@register_method("byol", augments=True)
class BYOL(Method):
    option_rules = {"rho": integer(2), "momentum": number(0, 1),
                    "debias": fixes.rule(("residual", "be", "fame"),
                                         why="BYOL has no negatives, so intra-video negatives have nothing to join")}
    def __init__(self, backbone: nn.Module, *, size: int = 112, augment: AugmentConfig = AugmentConfig(),
                 rho: int = 2, dim: int = 256, hidden: int = 4096, momentum: float = 0.996, predictor: bool = True,
                 debias: str | list = "none"):
        super().__init__()
        if rho < 2:
            raise ValueError(f"BYOL needs rho >= 2 clips per video, not {rho}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"BYOL momentum must be in [0, 1), not {momentum}.")
        self.backbone = backbone
        self.projector = head_init(mlp([backbone.feature_dim, hidden, dim], batch_norm=True))
        self.predictor = head_init(mlp([dim, hidden, dim], batch_norm=True)) if predictor else nn.Identity()
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.augment = VideoAugment(augment, size=size)
        self.rho, self.base_momentum = rho, momentum
        self.debias = fixes.Debias(debias)
        if "intra" in self.debias:
            raise ValueError("BYOL has no negatives, so debias 'intra' (intra-video negatives) does not apply.")
        self.momentum = momentum  # this step's, set from the training progress (so a resumed run has it too)

    @classmethod
    def sampler(cls, *, clip_len: int, stride: int = 1, rho: int = 2):
        """``rho`` clips per video at independent random moments."""
        return RandomClipSampler(clip_len=clip_len, stride=stride, num_clips=rho)

    def set_progress(self, progress: float) -> None:
        self.momentum = cosine_momentum(self.base_momentum, progress) if self.base_momentum else 0.0

    @torch.no_grad()
    def targets(self, views: list) -> torch.Tensor:
        """The target network's projection of each clip, one pass per clip: its BatchNorm sees one view of every
        video at a time, as SlowFast's rho-BYOL (``CONTRASTIVE.SEQUENTIAL: True`` makes ``contrastive_forward``
        call ``compute_key_feat`` with ``batched_inference=False`` for rho >= 2). rho x B x dim."""
        return torch.stack([self.target_projector(self.target_backbone(v)) for v in views])

    def forward(self, batch: dict):
        clips = batch["clips"]  # B x rho x C x T x H x W, uint8
        if clips.shape[1] != self.rho:
            raise ValueError(f"BYOL with rho={self.rho} needs {self.rho} clips per video, got {clips.shape[1]}.")
        views = [self.debias.query(self.augment, clips[:, 0])] + [self.augment(clips[:, i]) for i in range(1, self.rho)]
        views = [normalize(self.debias.seen(v)) for v in views]  # rho x (B x C x T x H x W)
        # online: one pass per clip, so BatchNorm sees one view of every video at a time (as the public code)
        p = torch.stack([self.predictor(self.projector(self.backbone(v))) for v in views])  # rho x B x dim
        with torch.no_grad():
            momentum_update(self.target_backbone, self.backbone, self.momentum)
            momentum_update(self.target_projector, self.projector, self.momentum)
            z = self.targets(views)  # rho x B x dim
        loss = byol_loss(p, z)
        target = gather_no_grad(z[0])  # B x dim, every process's batch
        logs = {"loss": loss.detach(), "acc": positive_rank_accuracy(p[0], z[1]), "momentum": self.momentum,
                "std": embedding_std(target)}  # 0: collapsed
        if target.device.type == "cpu":  # an SVD would make a GPU step wait for the device: the CPU logs it
            logs["rank"] = effective_rank(target)  # 1: collapsed to a line; at most the batch size - 1
        return loss, logs
