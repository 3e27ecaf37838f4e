"""DualVar: inter-intra variant dual representations (Zhang, She, Shen, Wang, *Inter-intra
Variant Dual Representations for Self-supervised Video Recognition*, BMVC 2021).

Contrastive learning makes a clip's embedding *invariant* to everything inside the video
(inter-variance only). DualVar adds an *intra-variant* representation: a segment head
maps a clip's pooled feature to S segment embeddings, one per temporal position.

* **Shuffle-rank** (intra): a copy c3 of clip c1 has its S segments permuted; its segment
  embeddings, put back in the original order, must rank each segment's own pair above the
  other segments (softplus((s_neg - s_pos) / theta)). Anchors: c1 and the unshuffled c3,
  weight 0.5 each. ``rank_form``: the public code's 2S x 2S matrix ("matrix") or anchor
  rows only ("anchor"); ``rank_cap``: its clamp of the scaled difference (5 with SimCLR,
  none with MoCo in the public code).
* **Temporal coherent contrast** (inter): two clips of one video are compared by the mean
  of their S x S segment similarities. ``coherent_form``: the public code's NT-Xent over the
  2N clips ("nt_xent", its SimCLR form), its MoCo form ("queue": the positive from the key
  encoder, negatives from a queue of past key clips' segments), or cross-view InfoNCE
  ("cross").
* Both are added to a base clip contrast: SimCLR's NT-Xent or MoCo's queue.

"auto" in ``rank_cap`` and ``coherent_form`` takes the public code's choice for the base.
``debias`` adds a published fix for the static shortcut (``course_lib.debias``), not in the paper:
``"residual"`` feeds the network IIC's residual frames instead of RGB, every clip after its
augmentation (notebook 07's section 6); BE and FAME change c1; ``"intra"`` adds c1's
intra-negative to the clip contrast (SimCLR: through the backbone in the same batch; MoCo:
through the key encoder).

As in the public code, both clips of a video play backwards with probability ``reverse``
(its ``--rand_flip`` in pretraining), there is no spatial flip, and c1, c2 and c3 go
through the backbone as one batch (SimCLR; with MoCo, c3 and its shuffled copy do).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import debias as fixes
from ..augment import AugmentConfig, VideoAugment
from ..losses import (COHERENT_FORMS, RANK_FORMS, MoCoQueue, momentum_update, nt_xent, shuffle_rank,
                      temporal_coherent, temporal_coherent_moco)
from .common import mlp, normalize
from .moco import MoCo, queue_length
from ..settings import integer, number, one_of
from .registry import Method, register_method

# temporally consistent colour jitter (0.8, 0.8, 0.8, 0.2) at p = 0.8 x 0.8 and blur at p = 0.5, random crop;
# no horizontal flip and no grayscale (the public code's pretraining transforms)
DUALVAR_AUGMENT = AugmentConfig(crop="random", flip=0.0, jitter=0.64, brightness=0.8, contrast=0.8, saturation=0.8,
                                hue=0.2, grayscale=0.0, blur=0.5)
BASES = ("simclr", "moco")
PUBLIC = {"simclr": {"rank_cap": 5.0, "coherent_form": "nt_xent"},  # model/simclr.py
          "moco": {"rank_cap": None, "coherent_form": "queue"}}  # model/moco.py


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
    option_rules = {"base": one_of(BASES), "debias": fixes.rule(), "segments": integer(1),
                    "segment_dim": integer(1), "theta": number(above=0), "rank_form": one_of(RANK_FORMS),
                    "coherent_form": one_of(("auto", *COHERENT_FORMS, "queue")), "reverse": number(0, 1)}
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
                 rank_form: str = "matrix", rank_cap: float | str | None = "auto", coherent_form: str = "auto",
                 reverse: float = 0.5, queue: int | None = None, momentum: float = 0.999, debias: str | list = "none",
                 num_videos: int | None = None):
        super().__init__()
        if base not in BASES:
            raise ValueError(f"DualVar base {base!r} is not one of {', '.join(BASES)}.")
        rank_cap = PUBLIC[base]["rank_cap"] if rank_cap == "auto" else rank_cap
        coherent_form = PUBLIC[base]["coherent_form"] if coherent_form == "auto" else coherent_form
        if rank_form not in RANK_FORMS:
            raise ValueError(f"DualVar rank_form {rank_form!r} is not one of {', '.join(RANK_FORMS)}.")
        if coherent_form not in (*COHERENT_FORMS, "queue") or (coherent_form == "queue" and base != "moco"):
            raise ValueError(f"DualVar coherent_form {coherent_form!r} is not one of {', '.join(COHERENT_FORMS)}"
                             f" (or queue, with base moco).")
        self.backbone, self.base = backbone, base
        d = backbone.feature_dim
        if base == "moco":  # the clip contrast is MoCo's: its projector, key encoder and queue; BN as SyncBN does
            queue = queue or queue_length(16384, num_videos)  # the paper's 16384, cut to half the training set
            self.moco = MoCo(backbone, size=size, augment=augment, dim=dim, queue=queue, momentum=momentum,
                             temperature=temperature, bn_groups=1)
        else:
            self.clip_head = mlp([d, d, dim])  # 512 -> 512 -> 128 in the paper
        if rank or coherent:
            self.segment_head = mlp([d, d, segments * segment_dim])  # 512 -> 512 -> n_s x 64
        if coherent and coherent_form == "queue":  # key segments from the momentum encoder, and their queue
            self.key_segment_head = copy.deepcopy(self.segment_head).requires_grad_(False)
            self.segment_queue = MoCoQueue(queue, segments * segment_dim, parts=segments)
        self.augment = VideoAugment(augment, size=size)
        self.segments, self.temperature, self.theta = segments, temperature, theta
        self.rank, self.coherent, self.reverse, self.debias = rank, coherent, reverse, fixes.Debias(debias)
        self.rank_form, self.rank_cap, self.coherent_form = rank_form, rank_cap, coherent_form

    @property
    def queue(self):
        """MoCo's queue (only with base="moco")."""
        return self.moco.queue

    def segment_embeddings(self, f: torch.Tensor, head: nn.Module | None = None) -> torch.Tensor:
        """B x D backbone features -> B x S x segment_dim, each segment embedding L2-normalised."""
        out = (head or self.segment_head)(f)  # B x (S d)
        return F.normalize(rearrange(out, "b (s d) -> b s d", s=self.segments), dim=2)

    def shuffled_copy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffle-rank's copy of clips x (B x C x T x H x W): (the copy, perm B x S), copy segment k being original
        segment perm[b, k]; ``shuffle_segments``. A subclass may make another copy with the same contract."""
        return shuffle_segments(x, self.segments)

    def rank_loss(self, e1: torch.Tensor, e3: torch.Tensor, f_shuffled: torch.Tensor, perm: torch.Tensor):
        """Shuffle-rank with anchors c1 (e1) and the unshuffled c3 (e3), 0.5 each."""
        e_shuf = self.segment_embeddings(f_shuffled)  # B x S x d, shuffled positions
        back = e_shuf[torch.arange(len(perm), device=perm.device)[:, None], perm.argsort(1)]  # original order
        kw = dict(form=self.rank_form, cap=self.rank_cap)
        return 0.5 * shuffle_rank(e1, back, self.theta, **kw) + 0.5 * shuffle_rank(e3, back, self.theta, **kw)

    def forward(self, batch: dict):
        clips = batch["clips"]  # B x 2 x C x T x H x W: two clips c1, c2 of each video
        if self.reverse:  # both clips of a video backwards in time, one coin per video
            back = torch.rand(len(clips), device=clips.device) < self.reverse
            clips = torch.where(back[:, None, None, None, None, None], clips.flip(3), clips)
        x1 = self.debias.query(self.augment, clips[:, 0])  # B x C x T x H x W in [0, 1]; BE or FAME if asked
        x2 = self.augment(clips[:, 1])
        x3 = self.augment(clips[:, 0]) if self.rank else None  # c3: c1's frames, augmented anew
        x1, x2, x3, xn = self.debias.seen(x1, x2, x3, self.debias.negative(x1))  # xn: c1's intra-negative
        logs = {}
        if self.base == "simclr":
            parts = [x for x in (x1, x2, x3, xn) if x is not None]
            f1, f2, *more = self.backbone(normalize(torch.cat(parts))).chunk(len(parts))  # B x D each, one batch
            f3 = more[0] if self.rank else None
            z1, z2 = self.clip_head(f1), self.clip_head(f2)  # B x dim each
            zn = self.clip_head(more[-1]) if xn is not None else None
            loss = logs["clip"] = nt_xent(z1, z2, self.temperature, negatives=zn)
            logs.update(self.debias.logs(z1, z2, zn))
        else:
            f1 = self.moco.query_features(x1)  # B x D
            loss, logits, key_f2 = self.moco.contrast(f1, x2, xn)
            logs["clip"] = loss
            if xn is not None:
                logs.update(self.debias.key_logs(logits, self.temperature))
        if self.coherent:
            e1 = self.segment_embeddings(f1)  # B x S x d
            if self.coherent_form == "queue":
                with torch.no_grad():
                    momentum_update(self.key_segment_head, self.segment_head, self.moco.momentum)
                    k = self.segment_embeddings(key_f2, self.key_segment_head)  # B x S x d
                logs["coherent"] = temporal_coherent_moco(e1, k, self.segment_queue.keys.clone(),
                                                          self.temperature)[0]
                self.segment_queue.enqueue(rearrange(k, "b s d -> b (s d)"))
            else:
                if self.base == "moco":
                    f2 = self.backbone(normalize(x2))
                logs["coherent"] = temporal_coherent(e1, self.segment_embeddings(f2), self.temperature,
                                                     form=self.coherent_form)
            loss = loss + logs["coherent"]
        if self.rank:
            shuffled, perm = self.shuffled_copy(x3)
            if self.base == "simclr":
                f_shuf = self.backbone(normalize(shuffled))
            else:  # c3 and its shuffled copy as one batch, as the public MoCo form
                f3, f_shuf = self.backbone(normalize(torch.cat([x3, shuffled]))).chunk(2)
            logs["rank"] = self.rank_loss(self.segment_embeddings(f1), self.segment_embeddings(f3), f_shuf, perm)
            loss = loss + logs["rank"]
        return loss, {"loss": loss.detach(), **{k: v.detach() for k, v in logs.items()}}
