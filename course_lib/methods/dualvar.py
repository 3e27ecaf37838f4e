"""DualVar: inter-intra variant dual representations (Zhang, She, Shen, Wang, *Inter-intra
Variant Dual Representations for Self-supervised Video Recognition*, BMVC 2021).

Contrastive learning makes a clip's embedding *invariant* to everything inside the video
(inter-variance only). DualVar adds an *intra-variant* representation: a segment head
maps a clip to S segment embeddings, one per temporal position.

* **Shuffle-rank** (intra): a copy c3 of clip c1 has its S segments permuted; its segment
  embeddings, put back in the original order, must rank segment i's own embedding above
  the other segments for an anchor segment i (softplus((s_neg - s_pos) / theta)). Anchors:
  c1 and the unshuffled c3, weight 0.5 each.
* **Temporal coherent contrast** (inter): two clips of one video are compared by the mean
  of their S x S segment similarities, InfoNCE over the other videos.
* Both are added to a base clip contrast: SimCLR's NT-Xent or MoCo's queue.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..augment import AugmentConfig, VideoAugment
from ..losses import nt_xent, shuffle_rank, temporal_coherent
from .common import mlp, normalize
from .moco import MoCo, queue_length
from .registry import Method, register_method

# temporally consistent colour jitter (0.8, 0.8, 0.8, 0.2) at about p = 0.64 and blur at p = 0.5, random crop
DUALVAR_AUGMENT = AugmentConfig(crop="random", flip=0.5, jitter=0.64, brightness=0.8, contrast=0.8, saturation=0.8,
                                hue=0.2, grayscale=0.0, blur=0.5)
BASES = ("simclr", "moco")


def shuffle_segments(x: torch.Tensor, segments: int, g: torch.Generator | None = None):
    """Cut each clip into ``segments`` equal parts in time and permute them per clip.

    x: B x C x T x H x W -> (shuffled clips, perm B x S) with shuffled segment k = original perm[b, k].
    """
    b, t = x.shape[0], x.shape[2]
    if t % segments:
        raise ValueError(f"DualVar needs a clip length divisible by {segments} segments, got {t}.")
    perm = torch.rand(b, segments, generator=g, device=x.device).argsort(1)  # B x S
    parts = rearrange(x, "b c (s l) h w -> b s c l h w", s=segments)
    shuffled = parts[torch.arange(b, device=x.device)[:, None], perm]  # B x S x C x L x H x W
    return rearrange(shuffled, "b s c l h w -> b c (s l) h w"), perm


@register_method("dualvar", augments=True)
class DualVar(Method):
    clips_per_video = 2  # c1 and c2, two moments of the video

    @classmethod
    def clip_problem(cls, clip_len: int, options: dict) -> str | None:
        segments = options.get("segments", 2)
        if clip_len % segments:
            return f"DualVar cuts a clip into segments={segments} equal segments: clip_len must be a multiple of it"
        return None

    def __init__(self, backbone: nn.Module, *, base: str = "simclr", size: int = 112,
                 augment: AugmentConfig = DUALVAR_AUGMENT, segments: int = 2, segment_dim: int = 64, dim: int = 128,
                 temperature: float = 0.07, theta: float = 0.05, rank: bool = True, coherent: bool = True,
                 queue: int | None = None, momentum: float = 0.999, num_videos: int | None = None):
        super().__init__()
        if base not in BASES:
            raise ValueError(f"DualVar base {base!r} is not one of {', '.join(BASES)}.")
        self.backbone, self.base = backbone, base
        d = backbone.feature_dim
        if base == "moco":  # the clip contrast is MoCo's: its projector, key encoder and queue
            queue = queue or queue_length(16384, num_videos)  # the paper's 16384, cut to half the training set
            self.moco = MoCo(backbone, size=size, augment=augment, dim=dim, queue=queue, momentum=momentum,
                             temperature=temperature)
        else:
            self.clip_head = mlp([d, d, dim])  # 512 -> 512 -> 128 in the paper
        self.segment_head = mlp([d, d, segments * segment_dim])  # 512 -> 512 -> n_s x 64
        self.augment = VideoAugment(augment, size=size)
        self.segments, self.temperature, self.theta = segments, temperature, theta
        self.rank, self.coherent = rank, coherent

    @property
    def queue(self):
        """MoCo's queue (only with base="moco")."""
        return self.moco.queue

    def segment_embeddings(self, f: torch.Tensor) -> torch.Tensor:
        """B x D backbone features -> B x S x segment_dim, each segment embedding L2-normalised."""
        return F.normalize(rearrange(self.segment_head(f), "b (s d) -> b s d", s=self.segments), dim=2)

    def forward(self, batch: dict):
        clips = batch["clips"]  # B x 2 x C x T x H x W: two clips c1, c2 of each video
        x1, x2 = self.augment(clips[:, 0]), self.augment(clips[:, 1])  # B x C x T x H x W in [0, 1]
        f1 = self.backbone(normalize(x1))  # B x D
        # the online features of c2: SimCLR's contrast and the coherent term need them, MoCo keys do not
        f2 = self.backbone(normalize(x2)) if self.base == "simclr" or self.coherent else None
        logs = {}
        if self.base == "moco":
            loss = logs["clip"] = self.moco.contrast(f1, x2)[0]
        else:
            loss = logs["clip"] = nt_xent(self.clip_head(f1), self.clip_head(f2), self.temperature)
        e1 = self.segment_embeddings(f1)  # B x S x d
        if self.coherent:
            logs["coherent"] = temporal_coherent(e1, self.segment_embeddings(f2), self.temperature)
            loss = loss + logs["coherent"]
        if self.rank:
            x3 = self.augment(clips[:, 0])  # c3: c1's frames, augmented anew
            shuffled, perm = shuffle_segments(x3, self.segments)
            e3 = self.segment_embeddings(self.backbone(normalize(x3)))  # unshuffled c3, the second anchor
            e_shuf = self.segment_embeddings(self.backbone(normalize(shuffled)))  # B x S x d, shuffled positions
            back = e_shuf[torch.arange(len(perm), device=perm.device)[:, None], perm.argsort(1)]  # original order
            logs["rank"] = 0.5 * shuffle_rank(e1, back, self.theta) + 0.5 * shuffle_rank(e3, back, self.theta)
            loss = loss + logs["rank"]
        return loss, {"loss": loss.item(), **{k: v.item() for k, v in logs.items()}}
