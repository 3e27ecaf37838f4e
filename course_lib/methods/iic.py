"""IIC: inter-intra contrastive learning (Tao, Wang, Yamasaki, *Self-supervised Video
Representation Learning Using Inter-intra Contrastive Framework*, ACM MM 2020).

Two views of each clip share one encoder: the RGB clip and its residual frames (or a
second RGB crop). The contrast is over memory banks (one entry per training video and
view, momentum 0.5): a view's positive is the other view's bank entry of the same video,
its inter-negatives are K random other entries of that bank. Intra-negatives break the
clip's temporal order (a repeated frame, or two swapped chunks) while keeping its
appearance, so the encoder must use time to tell them from the positive. Their features
have a bank too; each query meets K + 1 of them, its own among them.

``intra_grad=True`` (the paper's idea) uses the live intra-negative feature of each clip,
so gradients flow through it; ``intra_grad=False`` is the public code's form, where
intra-negatives enter only through the detached bank.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import IIC_AUGMENT, INTRA_NEGATIVES, SHUFFLE_CHUNKS, AugmentConfig, VideoAugment, residual_frames
from ..losses import MemoryBank, bank_nce
from .common import normalize
from ..settings import integer, number, one_of
from .registry import Method, register_method

VIEWS = ("residual", "rgb")


def sample_others(index: torch.Tensor, num_videos: int, k: int) -> torch.Tensor:
    """B x k video indices drawn uniformly with replacement, never the query's own (index[b])."""
    others = torch.randint(0, num_videos - 1, (len(index), k), device=index.device)
    return others + (others >= index[:, None]).long()  # skip over the query's own index


@register_method("iic", augments=True)
class IIC(Method):
    option_rules = {"view2": one_of(VIEWS), "intra": one_of(("none", *INTRA_NEGATIVES), optional=True),
                    "negatives": integer(1), "bank_momentum": number(0, 1)}
    needs = ("num_videos",)  # one memory-bank entry per training video

    @classmethod
    def clip_problem(cls, clip_len: int, options: dict) -> str | None:
        view2, intra = options.get("view2", "residual"), options.get("intra", "repeat")
        if clip_len < 2 and (view2 == "residual" or intra in ("repeat", "shuffle", "reverse")):
            return "IIC's residual frames and intra-negatives need clips of at least 2 frames"
        if intra == "shuffle" and clip_len % SHUFFLE_CHUNKS:
            return f"IIC's chunk shuffle cuts a clip into {SHUFFLE_CHUNKS} chunks: clip_len must be a multiple of it"
        return None

    def __init__(self, backbone: nn.Module, *, num_videos: int, size: int = 112, view2: str = "residual",
                 intra: str | None = "repeat", intra_grad: bool = True, negatives: int = 1024,
                 temperature: float = 0.07, bank_momentum: float = 0.5, augment: AugmentConfig = IIC_AUGMENT):
        super().__init__()
        if view2 not in VIEWS:
            raise ValueError(f"IIC view2 {view2!r} is not one of {', '.join(VIEWS)}.")
        if intra not in (None, "none", *INTRA_NEGATIVES):
            raise ValueError(f"IIC intra {intra!r} is not one of none, {', '.join(INTRA_NEGATIVES)}.")
        self.backbone = backbone
        self.view2, self.intra, self.intra_grad = view2, None if intra == "none" else intra, intra_grad
        self.negatives, self.temperature = negatives, temperature
        d = backbone.feature_dim
        self.bank1 = MemoryBank(num_videos, d, bank_momentum)  # RGB view
        self.bank2 = MemoryBank(num_videos, d, bank_momentum)  # second view
        self.bank_intra = MemoryBank(num_videos, d, bank_momentum) if self.intra else None
        self.augment = VideoAugment(augment, size=size)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(normalize(x)), dim=1)  # B x D

    def forward(self, batch: dict):
        clips, index = batch["clips"][:, 0], batch["index"]  # B x C x T x H x W uint8, B
        x = self.augment(clips)  # B x C x T x H x W in [0, 1]
        v2 = residual_frames(x) if self.view2 == "residual" else self.augment(clips)  # RGB/RGB: another crop
        f1, f2 = self.embed(x), self.embed(v2)  # B x D each
        # candidates: column 0 is the video itself (the positive), then K random videos
        cand = torch.cat([index[:, None], sample_others(index, len(self.bank1), self.negatives)], 1)  # B x (K + 1)
        intra = None
        if self.intra:
            fn = self.embed(INTRA_NEGATIVES[self.intra](x))  # B x D, same appearance, broken time
            intra = self.bank_intra[cand]  # B x (K + 1) x D
            if self.intra_grad:  # the clip's own intra-negative enters live, with its gradient
                intra = torch.cat([fn[:, None], intra[:, 1:]], 1)
        losses, probs = [], []
        for q, bank in ((f1, self.bank2), (f2, self.bank1)):  # each view against the other view's bank
            c = bank[cand]  # B x (K + 1) x D
            if intra is not None:
                c = torch.cat([c, intra], 1)  # B x (2K + 2) x D
            loss, logits = bank_nce(q, c, self.temperature)
            losses.append(loss)
            probs.append(logits.softmax(1)[:, 0].mean().detach())
        self.bank1.update(index, f1)
        self.bank2.update(index, f2)
        if self.intra:
            self.bank_intra.update(index, fn)
        loss = losses[0] + losses[1]
        return loss, {"loss": loss.detach(), "loss_view1": losses[0].detach(), "loss_view2": losses[1].detach(),
                      "p_pos_view1": probs[0], "p_pos_view2": probs[1]}
