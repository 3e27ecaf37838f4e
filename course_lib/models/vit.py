"""Video Vision Transformers over space-time tubelets: the backbone of masked video modelling.

Tong et al., *VideoMAE*, NeurIPS 2022 and Bardes et al., *V-JEPA*, 2024, both after
Dosovitskiy et al., *An Image is Worth 16x16 Words*, ICLR 2021 and Arnab et al., *ViViT*,
ICCV 2021. A clip is cut into non-overlapping tubelets of ``tubelet`` frames x ``patch`` x
``patch`` pixels, each embedded by one linear map (a strided Conv3d), given a fixed sine-cosine
position code, and processed by pre-norm Transformer blocks (multi-head self-attention and an
MLP of ratio 4, LayerNorm eps 1e-6, qkv with bias).

The backbone is a ``Backbone`` like the 3D CNNs: ``forward_features`` returns the tokens laid
out as a map (B, D, t, h, w), so pooling, retrieval, linear and the other protocols see a
feature map as from any other backbone. Masked methods call ``tokens(x, keep)`` to run the
encoder on the visible tokens only. ``pos="3d"`` (default) codes the (t, h, w) position of
a token with one sine-cosine code per axis, as V-JEPA (``src/models/utils/pos_embs.py``);
``pos="1d"`` codes its index in the flattened (t h w) order, as VideoMAE
(``get_sinusoid_encoding_table``). Both are fixed, so any clip size that the tubelets tile
works without interpolation.

Sizes: ``vit_s``, ``vit_b``, ``vit_l`` are ViT-S/B/L at patch 16 and tubelet 2 (the papers'
224 px clips); ``vit_course`` is the course's own small ViT at patch 8, so a 48 or 64 px frame
still gives 6 x 6 or 8 x 8 tokens. ``width`` scales the embedding dimension (rounded to a
multiple of the heads), as it scales the channels of the CNNs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..runtime import device_constant
from .registry import Backbone, head, register

POSITIONS = ("3d", "1d")


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """The Transformer's sine-cosine code of ``positions`` (N,): N x dim, sin at even and cos at odd
    channels, channel pair j at frequency 10000^(-2j / dim) (Vaswani et al., 2017)."""
    j = torch.arange(dim, dtype=torch.float64) // 2
    angle = positions.double()[:, None] / 10000 ** (2 * j / dim)  # N x dim
    return torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos()).float()


def position_code(grid: tuple[int, int, int], dim: int, kind: str = "3d") -> torch.Tensor:
    """Fixed position code of a (t, h, w) token grid: (t h w) x dim, tokens in (t h w) order.

    ``"1d"``: VideoMAE's ``get_sinusoid_encoding_table`` (``modeling_finetune.py``), ``sinusoid`` of the flattened
    token index over all ``dim`` channels. ``"3d"``: V-JEPA's ``get_3d_sincos_pos_embed`` with ``uniform_power=True``
    (jepa ``src/models/utils/pos_embs.py``; its pretraining configs set it): one sine-cosine code of
    2 ceil(dim / 6) channels per axis, the (t, h, w) codes concatenated and cut to ``dim``, so where 6 does not
    divide ``dim`` the w axis loses the cosines of its lowest frequencies (ViT-L, 1024: 342, 342 and 340 channels;
    ViT-B, 768: 256 each). Within an axis jepa puts all the sines, then all the cosines; here they alternate, as in
    ``sinusoid``: the same channels in another fixed order, which a network initialised alike in every channel
    cannot tell apart.
    """
    t, h, w = grid
    if kind == "1d":
        return sinusoid(torch.arange(t * h * w), dim)
    half = -(-dim // 6)  # frequencies per axis: ceil(dim / 6)
    axes = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    code = torch.cat([sinusoid(a.flatten(), 2 * half) for a in axes], dim=1)  # (t h w) x 6 half
    # channel c of an axis is channel c // 2 (a sine, c even) or half + c // 2 (a cosine) of the axis in jepa's
    # [sines | cosines]: keep the channels that survive jepa's cut of the (t, h, w) code to dim
    keep = [axis * 2 * half + c for axis in range(3) for c in range(2 * half)
            if axis * 2 * half + (half if c % 2 else 0) + c // 2 < dim]
    return code[:, keep]


# position_code_on(grid, dim, kind, device, dtype): position_code made once per grid, device and dtype, then
# reused, so a training step copies nothing from the host and never waits for the device
position_code_on = device_constant(position_code)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x B x N x D, index B x K -> the indexed tokens, B x K x D."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # B x N x D
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.heads)
        y = F.scaled_dot_product_attention(q, k, v)  # B x heads x N x D/heads
        return self.proj(rearrange(y, "b h n e -> b n (h e)"))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases, unit LayerNorms (VideoMAE's and V-JEPA's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def transformer(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> nn.Sequential:
    """``depth`` blocks; each method's decoder or predictor is one too."""
    return nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])


class VideoViT(Backbone):
    def __init__(self, *, dim: int, depth: int, heads: int, patch: int = 16, tubelet: int = 2,
                 num_classes: int | None = None, width: float = 1.0, pos: str = "3d", name: str = "vit"):
        super().__init__()
        if pos not in POSITIONS:
            raise ValueError(f"pos must be one of {', '.join(POSITIONS)}, not {pos!r}.")
        dim = max(heads, round(dim * width / heads) * heads)
        self.name, self.patch, self.tubelet, self.pos, self.heads = name, patch, tubelet, pos, heads
        self.feature_dim = dim
        self.patch_embed = nn.Conv3d(3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        self.blocks = transformer(dim, depth, heads)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = head(dim, num_classes)
        init_weights(self)
        w = self.patch_embed.weight  # as a linear map of the flattened tubelet (VideoMAE, MAE)
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)

    def grid(self, shape) -> tuple[int, int, int]:
        """The (t, h, w) token grid of clips of ``shape`` (..., T, H, W); ValueError if the tubelets do not tile them."""
        t, h, w = shape[-3:]
        if t % self.tubelet or h % self.patch or w % self.patch:
            raise ValueError(f"{self.name} takes frames in multiples of its tubelet ({self.tubelet}) and sides in "
                             f"multiples of its patch ({self.patch}), not {t} x {h} x {w}.")
        return t // self.tubelet, h // self.patch, w // self.patch

    def position_code(self, grid: tuple[int, int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        return position_code_on(tuple(grid), self.feature_dim, self.pos, torch.device(device or "cpu"), dtype)  # N x D

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clips B x 3 x T x H x W -> position-coded tokens B x N x D, N = (T/tubelet)(H/patch)(W/patch)."""
        grid = self.grid(x.shape)
        tokens = rearrange(self.patch_embed(x), "b d t h w -> b (t h w) d")
        return tokens + self.position_code(grid, x.device, tokens.dtype)

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded tokens B x N x D; with ``keep`` (B x K indices into the N tokens), only those K tokens
        enter the Transformer (B x K x D): the encoder never sees the others."""
        tokens = self.embed(x)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)  # B x K x D
        return self.norm(self.blocks(tokens))

    def forward_features(self, x):
        t, h, w = self.grid(x.shape)
        return rearrange(self.tokens(x), "b (t h w) d -> b d t h w", t=t, h=h, w=w)  # B x D x t x h x w


# name: (dim, depth, heads, patch)
SIZES = {"vit_course": (192, 6, 3, 8), "vit_s": (384, 12, 6, 16), "vit_b": (768, 12, 12, 16),
         "vit_l": (1024, 24, 16, 16)}


def _vit(name: str):
    dim, depth, heads, patch = SIZES[name]

    def build(**kwargs) -> VideoViT:
        return VideoViT(dim=dim, depth=depth, heads=heads, patch=patch, name=name, **kwargs)

    build.__doc__ = f"{name}: {depth} blocks of width {dim} ({heads} heads), tubelets of 2 x {patch} x {patch}."
    return register(name)(build)


for _name in SIZES:
    _vit(_name)


__all__ = ["VideoViT", "Block", "gather_tokens", "transformer", "init_weights", "position_code", "position_code_on", "sinusoid", "SIZES"]
