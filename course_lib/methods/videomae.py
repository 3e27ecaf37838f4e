"""VideoMAE: masked autoencoding of clips (Tong, Song, Wang, Wang, *VideoMAE: Masked Autoencoders
are Data-Efficient Learners for Self-Supervised Video Pre-Training*, NeurIPS 2022; code
MCG-NJU/VideoMAE).

A clip is cut into tubelets (``course_lib.models.vit``); a very high share of them (``mask_ratio``,
0.9) is hidden by tube masking, the same patches at every time step, so that a hidden patch
cannot be copied from its neighbour in time. The encoder (the backbone) sees only the visible
tokens, which is what makes the method cheap. A light decoder takes the encoded visible tokens
and one learnt mask token for every hidden position, each with its fixed position code, and
predicts the hidden tubelets' pixels. The loss is the mean squared error on the hidden tubelets
only, against pixels normalised per tubelet and channel (``norm_pix``): each patch minus its mean
over its pixels, over its standard deviation (VideoMAE's ``run_mae_pretraining``, the
``normlize_target`` path of ``engine_for_pretraining.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..augment import AugmentConfig, VideoAugment
from ..models.vit import VideoViT, gather_tokens, init_weights, position_code_on, transformer
from .common import normalize
from .masking import MASK_FNS, visible_and_masked
from ..runtime import send
from ..settings import integer, number, one_of
from .registry import Method, register_method

# VideoMAE's pretraining augmentation (datasets.py): a multi-scale crop (sides 1, .875, .75, .66 of the short side,
# at fixed corner and centre offsets) resized; no flip, no colour changes. The course's area crop over that range:
MAE_AUGMENT = AugmentConfig(scale=(0.66 ** 2, 1.0), ratio=(3 / 4, 4 / 3), flip=0.0, jitter=0.0, grayscale=0.0)


def patch_targets(x: torch.Tensor, tubelet: int, patch: int, *, norm_pix: bool = True,
                  eps: float = 1e-6) -> torch.Tensor:
    """Pixels of every tubelet, B x N x (tubelet patch patch 3), tubelets in (t h w) order.

    x: B x 3 x T x H x W in [0, 1]. With ``norm_pix``, each tubelet's pixels of each channel minus
    their mean, over their standard deviation (unbiased) plus ``eps``, as VideoMAE's target.
    """
    p = rearrange(x, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet, p1=patch, p2=patch)
    if norm_pix:
        p = (p - p.mean(dim=-2, keepdim=True)) / (p.var(dim=-2, unbiased=True, keepdim=True).sqrt() + eps)
    return rearrange(p, "b n q c -> b n (q c)")


class MaskedDecoder(nn.Module):
    """Encoded visible tokens and learnt mask tokens, each plus its position code, through ``depth``
    Transformer blocks; a linear head on the masked positions. VideoMAE's decoder (``PretrainVisionTransformerDecoder``)
    and, with ``out`` the encoder width, V-JEPA's predictor."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, out: int, pos: str = "3d", *,
                 embed_bias: bool = False, zero_mask_token: bool = False, mask_tokens: int = 1):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim, bias=embed_bias)
        self.mask_token = nn.Parameter(torch.zeros(mask_tokens, 1, dim))  # V-JEPA: one per mask set
        self.blocks = transformer(dim, depth, heads)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out)
        self.pos = pos
        init_weights(self)
        if not zero_mask_token:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, latent, visible, masked, grid, which: int = 0):
        """latent B x K x in_dim at ``visible`` (B x K); predictions B x M x out at ``masked`` (B x M), from mask
        token number ``which``."""
        code = position_code_on(tuple(grid), self.mask_token.shape[-1], self.pos, latent.device, latent.dtype)  # N x dim
        seen = self.embed(latent) + code[visible]  # B x K x dim
        hidden = self.mask_token[which] + code[masked]  # B x M x dim
        y = self.blocks(torch.cat([seen, hidden], 1))  # B x (K + M) x dim
        return self.head(self.norm(y[:, -masked.shape[1]:]))  # B x M x out


def needs_vit(method: str, backbone: nn.Module) -> VideoViT:
    if not isinstance(backbone, VideoViT):
        raise ValueError(f"the {method} method needs a ViT backbone (model vit_course, vit_s, vit_b or vit_l), "
                         f"not {type(backbone).__name__}.")
    return backbone


@register_method("videomae", augments=True)
class VideoMAE(Method):
    option_rules = {"mask_ratio": number(above=0, high=0.99), "masking": one_of(tuple(MASK_FNS)),
                    "decoder_depth": integer(1)}
    vit_only = True

    def __init__(self, backbone: nn.Module, *, size: int = 112, augment: AugmentConfig = MAE_AUGMENT,
                 mask_ratio: float = 0.9, masking: str = "tube", decoder_depth: int = 4, norm_pix: bool = True):
        super().__init__()
        vit = needs_vit("videomae", backbone)
        if masking not in MASK_FNS:
            raise ValueError(f"videomae masking must be one of {', '.join(MASK_FNS)}, not {masking!r}.")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"videomae mask_ratio must be in (0, 1), not {mask_ratio}.")
        self.backbone = backbone
        heads = max(1, vit.heads // 2)  # the decoder: half the encoder's width and heads (ViT-B: 384, 6)
        dim = max(heads, round(vit.feature_dim / 2 / heads) * heads)
        out = 3 * vit.tubelet * vit.patch ** 2
        self.decoder = MaskedDecoder(vit.feature_dim, dim, decoder_depth, heads, out, vit.pos)
        self.augment = VideoAugment(augment, size=size)
        self.mask_ratio, self.masking, self.norm_pix = mask_ratio, masking, norm_pix

    def forward(self, batch: dict):
        x = self.augment(batch["clips"][:, 0])  # B x C x T x H x W in [0, 1]
        vit = self.backbone
        grid = vit.grid(x.shape)
        mask = batch.get("mask")  # B x N, True = hidden; drawn here (on the host) unless given
        if mask is None:
            mask = MASK_FNS[self.masking](x.shape[0], grid, self.mask_ratio)
        # indices found on the host and sent without waiting: a step never waits for the device
        visible, masked = (send(i, x.device) for i in visible_and_masked(mask.cpu()))  # B x K, B x M
        latent = vit.tokens(normalize(x), keep=visible)  # B x K x D: the encoder sees the visible tokens only
        pred = self.decoder(latent, visible, masked, grid)  # B x M x (tubelet patch patch 3)
        target = gather_tokens(patch_targets(x, vit.tubelet, vit.patch, norm_pix=self.norm_pix), masked)
        loss = F.mse_loss(pred.float(), target)
        return loss, {"loss": loss.detach(), "visible": visible.shape[1], "masked": masked.shape[1]}
