"""CVRL: spatiotemporal contrastive video representation learning (Qian et al., *Spatiotemporal
Contrastive Video Representation Learning*, CVPR 2021).

Two clips of a video, drawn by the temporal interval sampler (nearby clips more often),
each augmented with temporally consistent spatial augmentation: random resized crop
(area 0.3-1, aspect 0.5-2), flip, strong colour jitter, grayscale, and asymmetric blur
and solarize as in the public code (blur always on clip 1, p = 0.1 on clip 2; solarize
p = 0.2 on clip 2 only). A 3-layer MLP head (2048 wide, BN, ReLU) maps the backbone
feature to 128-d, and the symmetric NT-Xent loss at temperature 0.1 contrasts the 2N clips.
As in the official code (``official/projects/video_ssl/losses/losses.py``), the loss is the
sum of its two directions, loss_a + loss_b, each a mean over N rows: twice SimCLR's mean
over the 2N rows, which the paper's lr 0.32 goes with. ``loss_sum=False`` gives the mean.
The paper's backbone is ``r3d_50``; any registered backbone works. ``debias`` adds a published
fix for the static shortcut (``course_lib.debias``): BE and FAME change clip 1, and with
``intra`` clip 1's intra-negative goes through the network like the clips, gradients included.
"""
from __future__ import annotations

from torch import nn

from .. import debias as fixes
from ..augment import AugmentConfig, VideoAugment
from ..losses import nt_xent, positive_rank_accuracy
from ..data.samplers import TemporalIntervalSampler
from .common import mlp, normalize
from ..settings import number, one_of
from .registry import Method, register_method

# the official video_ssl_preprocess_ops.py: contrast around each channel's clip mean, blur with zero padding
CVRL_AUGMENT = AugmentConfig(scale=(0.3, 1.0), ratio=(0.5, 2.0), flip=0.5, jitter=0.8, brightness=0.8, contrast=0.8,
                             contrast_mean="channel", saturation=0.8, hue=0.2, grayscale=0.2, blur=1.0,
                             blur_padding="zeros", solarize=0.0)


@register_method("cvrl", augments=True)
class CVRL(Method):
    option_rules = {"interval": one_of(("decreasing", "uniform", "increasing")), "power": number(above=0),
                    "blur2": number(0, 1), "solarize2": number(0, 1), "debias": fixes.rule()}
    @classmethod
    def sampler(cls, *, clip_len: int, stride: int = 1, interval: str = "decreasing", power: float = 1.0):
        """Two clips whose start gap follows the ``interval`` density (``power``: its exponent)."""
        return TemporalIntervalSampler(clip_len=clip_len, stride=stride, mode=interval, power=power)

    def __init__(self, backbone: nn.Module, *, size: int = 224, augment: AugmentConfig = CVRL_AUGMENT,
                 blur2: float = 0.1, solarize2: float = 0.2, hidden: int = 2048, dim: int = 128,
                 temperature: float = 0.1, loss_sum: bool = True, debias: str | list = "none"):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp([backbone.feature_dim, hidden, hidden, hidden, dim], batch_norm=True)
        self.augment1 = VideoAugment(augment, size=size)
        self.augment2 = VideoAugment(augment, size=size, blur=blur2, solarize=solarize2)
        self.temperature, self.loss_sum, self.debias = temperature, loss_sum, fixes.Debias(debias)

    def embed(self, x):
        """Clips B x C x T x H x W in [0, 1] -> projections B x dim; None stays None."""
        return None if x is None else self.projector(self.backbone(normalize(x)))

    def forward(self, batch: dict):
        clips = batch["clips"]  # B x 2 x C x T x H x W uint8: the two clips of the interval sampler
        if clips.shape[1] != 2:
            raise ValueError(f"CVRL needs 2 clips per video (the temporal interval sampler), got {clips.shape[1]}.")
        x1 = self.debias.query(self.augment1, clips[:, 0])  # with BE or FAME if asked
        x2 = self.augment2(clips[:, 1])  # B x C x T x size x size each, in [0, 1]
        x1, x2, xn = self.debias.seen(x1, x2, self.debias.negative(x1))
        z1, z2, zn = self.embed(x1), self.embed(x2), self.embed(xn)  # B x dim each (zn: None without intra)
        loss = nt_xent(z1, z2, self.temperature, reduction="sum" if self.loss_sum else "mean", negatives=zn)
        return loss, {"loss": loss.detach(), "acc": positive_rank_accuracy(z1, z2), **self.debias.logs(z1, z2, zn)}
