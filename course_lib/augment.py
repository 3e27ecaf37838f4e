"""Batched, temporally consistent spatial augmentation of clips, intra-negatives, residual frames.

A batch of clips ``(B, C, T, H, W)`` (uint8 or float in [0, 1], on any device) is
augmented in a handful of tensor operations with no Python loop over clips (on the CPU
the batch goes through in cache-sized blocks of a few clips, each block batched). Every
random parameter (crop box, flip, jitter factors and their order, grayscale, blur sigma,
solarize) is drawn once per clip and shared by all of its frames: the *temporally
consistent* augmentation of CVRL (Qian et al., CVPR 2021, section 3.2). With
``consistent=False`` each frame draws its own parameters, the ablation CVRL argues
against.

Each operation computes what ``torchvision.transforms.v2.functional`` computes for the
same parameters (the tests check this op by op); the crop is resampled bilinearly
without antialiasing (decode at the target short side, so the crop shrinks little).

Intra-negatives (IIC: Tao, Wang, Yamasaki, ACM MM 2020) keep a clip's appearance and
break its temporal order: ``frame_repeat``, ``chunk_shuffle``, ``reverse``.
``residual_frames`` is IIC's second view.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
from einops import rearrange, repeat
from torch import nn

from .runtime import full_precision

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision


@dataclass(frozen=True)
class AugmentConfig:
    """SimCLR-style defaults; CVRL, IIC and the widgets change some fields."""

    size: int = 112  # output frames are size x size
    crop: str = "resized"  # "resized" (area and aspect ranges), "random" (plain size x size crop), "center"
    scale: tuple[float, float] = (0.08, 1.0)  # crop area as a fraction of the frame
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio w / h
    flip: float = 0.5  # probability of a horizontal flip
    jitter: float = 0.8  # probability of colour jitter
    brightness: float = 0.4
    contrast: float = 0.4
    contrast_mean: str = "gray"  # "gray": each frame's mean luma (torchvision); "channel": each channel's clip mean (CVRL)
    saturation: float = 0.4
    hue: float = 0.1
    grayscale: float = 0.2  # probability
    blur: float = 0.0  # probability of Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 0  # odd kernel size; 0: about a tenth of size
    blur_padding: str = "reflect"  # "reflect" (torchvision) or "zeros" (CVRL's official TF code)
    solarize: float = 0.0  # probability
    solarize_threshold: float = 0.5
    consistent: bool = True  # one draw per clip (True) or per frame (False)

    @property
    def kernel(self) -> int:
        return self.blur_kernel or (self.size // 10) | 1

    def replace(self, **changes) -> "AugmentConfig":
        return replace(self, **changes)


def crop_room(size: int) -> int:
    """The frame size to decode when a size x size crop is taken on the device (the 112-of-128 ratio)."""
    return round(size * 8 / 7)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of (..., H, W) frames (unchanged if they are that size already)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


# IIC: one random 112x112 crop shared by the clip, no flip, no colour (section 4.1 of the paper)
IIC_AUGMENT = AugmentConfig(crop="random", flip=0.0, jitter=0.0, grayscale=0.0)


# ----------------------------------------------------------------------------- parameters
def _uniform(n: int, low: float, high: float, g, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def crop_boxes(cfg: AugmentConfig, n: int, height: int, width: int, g=None, device="cpu") -> torch.Tensor:
    """n crop boxes (top, left, h, w), int64 (n, 4), drawn like torchvision's RandomResizedCrop."""
    if cfg.crop in ("random", "center"):
        if cfg.size > height or cfg.size > width:
            raise ValueError(f"crop size {cfg.size} is larger than the frames ({height}x{width}).")
        if cfg.crop == "center":
            top = torch.full((n,), (height - cfg.size) // 2, device=device)
            left = torch.full((n,), (width - cfg.size) // 2, device=device)
        else:
            top = torch.randint(0, height - cfg.size + 1, (n,), generator=g, device=device)
            left = torch.randint(0, width - cfg.size + 1, (n,), generator=g, device=device)
        size = torch.full((n,), cfg.size, device=device)
        return torch.stack([top, left, size, size], 1)
    if cfg.crop != "resized":
        raise ValueError(f"augment crop {cfg.crop!r} is not one of resized, random, center.")
    tries = 10  # torchvision's number of attempts before the centre-crop fallback
    area = height * width
    target = area * _uniform(n * tries, *cfg.scale, g, device).view(n, tries)
    log_r = _uniform(n * tries, math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), g, device).view(n, tries)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect)).long()  # n x tries
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.long().argmax(1)  # first valid try (0 if none)
    h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
    # fallback when no try fits: the largest centred crop with a ratio inside cfg.ratio
    in_ratio = width / height
    if in_ratio < cfg.ratio[0]:
        fw, fh = width, int(round(width / cfg.ratio[0]))
    elif in_ratio > cfg.ratio[1]:
        fw, fh = int(round(height * cfg.ratio[1])), height
    else:
        fw, fh = width, height
    found = ok.any(1)
    h = torch.where(found, h, torch.full_like(h, fh))
    w = torch.where(found, w, torch.full_like(w, fw))
    top = (torch.rand(n, generator=g, device=device) * (height - h + 1)).long()
    left = (torch.rand(n, generator=g, device=device) * (width - w + 1)).long()
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack([top, left, h, w], 1)


def sample_params(cfg: AugmentConfig, n: int, height: int, width: int, g=None, device="cpu") -> dict:
    """Draw the parameters of n augmentations (one per clip, or per frame when not consistent)."""
    def coin(p):
        return torch.rand(n, generator=g, device=device) < p

    def factor(s):
        return _uniform(n, max(0.0, 1 - s), 1 + s, g, device)

    return {
        "box": crop_boxes(cfg, n, height, width, g, device),  # n x 4: top, left, h, w
        "flip": coin(cfg.flip),
        "jitter": coin(cfg.jitter),
        # factors of brightness, contrast, saturation, hue; order: a permutation of the four per clip
        "factors": torch.stack([factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation),
                                _uniform(n, -cfg.hue, cfg.hue, g, device)], 1),
        "order": torch.rand(n, 4, generator=g, device=device).argsort(1),
        "gray": coin(cfg.grayscale),
        "blur": coin(cfg.blur),
        "sigma": _uniform(n, *cfg.blur_sigma, g, device),
        "solarize": coin(cfg.solarize),
    }


# ----------------------------------------------------------------------------- operations
# Every operation takes x: N x C x T x H x W float in [0, 1] and per-clip parameters of length N.
def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A length-N parameter, shaped to broadcast over N x C x T x H x W."""
    return v.to(x.dtype).view(-1, 1, 1, 1, 1)


def _source(start: torch.Tensor, length: torch.Tensor, out: int, size: int) -> torch.Tensor:
    """grid_sample coordinates (N x out) of a bilinear resize of [start, start + length) to ``out``.

    The source position of output pixel i is (i + 0.5) * length / out - 0.5, clamped into
    the crop as F.interpolate(align_corners=False) clamps it; it is then mapped to [-1, 1]
    over the full axis of ``size`` pixels.
    """
    dst = torch.arange(out, device=start.device, dtype=torch.float32)
    src = (dst + 0.5) * (length.float()[:, None] / out) - 0.5
    src = torch.minimum(src.clamp(min=0), length[:, None] - 1.0) + start[:, None]
    return (2 * src + 1) / size - 1


def resized_crop(x: torch.Tensor, box: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop box[i] = (top, left, h, w) from clip i, resize it to size x size (bilinear), flip if flip[i].

    N x C x T x H x W (uint8, or float in [0, 1]) -> float N x C x T x size x size. One
    ``grid_sample`` call for the whole batch: C and T are the channels that share a clip's grid.
    """
    n, c, t, h, w = x.shape
    ys = _source(box[:, 0], box[:, 2], size, h)  # N x size
    xs = _source(box[:, 1], box[:, 3], size, w)  # N x size
    if flip is not None:
        xs = torch.where(flip[:, None], xs.flip(1), xs)  # a mirrored crop reads its columns backwards
    grid = torch.stack([xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)], -1)
    frames = rearrange(x, "n c t h w -> n (c t) h w").float()
    out = nn.functional.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if x.dtype == torch.uint8:
        out.mul_(1 / 255)
    return rearrange(out, "n (c t) h w -> n c t h w", c=c)


def hflip(x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    return torch.where(on.view(-1, 1, 1, 1, 1), x.flip(-1), x)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma, N x 1 x T x H x W."""
    r, g, b = x.unbind(1)
    return (r * GRAY[0]).add_(g, alpha=GRAY[1]).add_(b, alpha=GRAY[2]).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """ratio * a + (1 - ratio) * b, clamped to [0, 1] (torchvision's _blend); b broadcasts to a."""
    return torch.lerp(b.expand_as(a), a, _col(ratio, a)).clamp_(0, 1)


def adjust_brightness(x, f):
    return (x * _col(f, x)).clamp_(0, 1)


def adjust_contrast(x, f, mean: str = "gray"):
    """Blend with a mean: "gray", the mean luma of each frame (as torchvision), taken from the channel
    means; "channel", each channel's mean over the whole clip (as tf.image.adjust_contrast on a clip
    laid out as one image, CVRL's official ``video_ssl_preprocess_ops.py``)."""
    if mean == "channel":
        return _blend(x, x.mean(dim=(2, 3, 4), keepdim=True), f)  # N x C x 1 x 1 x 1
    m = x.mean(dim=(3, 4))  # N x C x T
    gray = m[:, 0] * GRAY[0] + m[:, 1] * GRAY[1] + m[:, 2] * GRAY[2]  # N x T
    return _blend(x, gray[:, None, :, None, None], f)


def adjust_saturation(x, f):
    return _blend(x, grayscale(x), f)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eq = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eq, ones, maxc)
    cr = torch.where(eq, ones, cr)
    rc, gc, bc = (maxc - r) / cr, (maxc - g) / cr, (maxc - b) / cr
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB by the closed form c_n = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6,
    n = 5, 3, 1 for R, G, B (equal to torchvision's six-case table, with far fewer passes)."""
    h, s, v = x.unbind(1)
    h6, vs = h * 6.0, v * s
    out = [v - vs * torch.clamp(torch.minimum(k, 4.0 - k), 0, 1)
           for k in (torch.remainder(h6 + n, 6.0) for n in (5.0, 3.0, 1.0))]
    return torch.stack(out, 1)


def adjust_hue(x, f):
    """Rotate the hue by f turns: ``hsv_to_rgb`` of ``rgb_to_hsv`` with h + f, fused.

    A hue rotation keeps each pixel's max v and min, so with chroma c = v - min,
    channel n is v - c * clamp(min(k, 4 - k), 0, 1), k = (6h + 6f + n) mod 6, n = 5, 3, 1.
    That trapezoid equals clamp(d - 1, 0, 1), d the distance from k + 1 to the nearest
    multiple of 6, which needs no branch. 6h * c comes from the channel that holds the max
    (r before g before b, as torchvision). No HSV tensors and no six-case table: about 3x
    faster than torchvision's round trip on the CPU, and equal to it within 2e-6.
    """
    maxc = x.amax(1, keepdim=True)  # N x 1 x T x H x W
    chroma = maxc - x.amin(1, keepdim=True)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    h6c = torch.lerp((r - g).add_(chroma, alpha=4), (b - r).add_(chroma, alpha=2), (g == maxc).to(x.dtype))
    h6c = torch.lerp(h6c, g - b, (r == maxc).to(x.dtype))  # 6 h * chroma, 6 h in [-1, 5)
    h6 = h6c.div_(chroma.clamp(min=1e-30)).add_(_col(f, x) * 6)
    k1 = h6 + torch.arange(0.0, -5.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)  # k + 1 - 6, N x 3 x ...
    d = k1.sub_(torch.round(k1 * (1 / 6)).mul_(6)).abs_()  # in [0, 3]
    return torch.addcmul(maxc, chroma, d.sub_(1.0).clamp_(0, 1), value=-1)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _jitter_ops(contrast_mean: str = "gray") -> list:
    ops = list(JITTER_OPS)
    if contrast_mean != "gray":
        ops[1] = lambda v, f: adjust_contrast(v, f, contrast_mean)
    return ops


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, contrast_mean: str = "gray",
                 *, sync_free: bool = False) -> torch.Tensor:
    """Apply the four jitter ops to each clip in its own random order.

    factors: N x 4 (brightness, contrast, saturation, hue); order: N x 4 permutations.
    Clips that share an order (24 are possible) go through the four ops as one batch; finding
    the groups reads the orders on the host. ``sync_free`` (a GPU's choice) reads nothing:
    at each of the four positions every op runs on every clip and each clip keeps the result
    of the op its order names there (four times the arithmetic, no wait for the device).
    """
    ops = _jitter_ops(contrast_mean)
    if sync_free:
        for k in range(4):
            pick = order[:, k].view(-1, 1, 1, 1, 1)
            y = ops[3](x, factors[:, 3])
            for op in (2, 1, 0):
                y = torch.where(pick == op, ops[op](x, factors[:, op]), y)
            x = y
        return x
    orders, group = order.unique(dim=0, return_inverse=True)
    if len(orders) == 1:  # one order for all (always so for a block of one clip): no regrouping
        for op in orders[0].tolist():
            x = ops[op](x, factors[:, op])
        return x
    out = torch.empty_like(x)
    for gi, perm in enumerate(orders.tolist()):
        idx = (group == gi).nonzero()[:, 0]
        y = x[idx]
        for op in perm:
            y = ops[op](y, factors[idx, op])
        out.index_copy_(0, idx, y)
    return out


def gaussian_kernels(sigma: torch.Tensor, k: int) -> torch.Tensor:
    """N x k normalised 1D Gaussian kernels, as torchvision's gaussian_blur.

    Taps below 1e-20 are set to zero: for a small sigma the far taps are subnormal floats
    (sigma 0.15 gives 2.5e-39 two pixels out), on which CPU arithmetic is slow (a blur of
    two clips at sigma 0.15 took 46 ms with them and 5.6 ms without), and they cannot
    change a float32 pixel.
    """
    d = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k, device=sigma.device)
    w = torch.exp(-0.5 * (d[None] / sigma[:, None]) ** 2)
    w = w.masked_fill(w < 1e-20, 0.0)
    return w / w.sum(1, keepdim=True)


def blur_matrices(sigma: torch.Tensor, k: int, size: int, padding: str = "reflect") -> torch.Tensor:
    """N x size x size matrices M with (row @ M) = the row blurred with clip i's kernel.

    Column j of M holds the kernel centred on pixel j. Taps that fall off the edge are
    reflected back inside ("reflect", as torchvision) or dropped ("zeros", zero padding as
    CVRL's TF code), so padding costs nothing.
    """
    kern = gaussian_kernels(sigma, k)  # N x k
    j = torch.arange(size, device=sigma.device)
    src = j[None, :] + torch.arange(k, device=sigma.device)[:, None] - k // 2  # k x size: tap source pixel
    weight = kern[:, :, None].expand(len(sigma), k, size)
    if padding == "zeros":
        inside = (src >= 0) & (src < size)
        weight, src = weight * inside, src.clamp(0, size - 1)  # a tap off the edge adds 0
    elif padding == "reflect":
        src = src.abs()  # reflect at 0: -1 -> 1
        src = torch.where(src > size - 1, 2 * (size - 1) - src, src)  # reflect at the end
    else:
        raise ValueError(f"blur padding {padding!r} is not reflect or zeros.")
    m = torch.zeros(len(sigma), size, size, device=sigma.device, dtype=kern.dtype)
    m.scatter_add_(1, src[None].expand(len(sigma), k, size), weight)
    return m


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, k: int, padding: str = "reflect") -> torch.Tensor:
    """Separable Gaussian blur with clip i's own sigma and reflect padding, as torchvision's (or zero padding).

    Each axis is one batched matrix product with a banded matrix, which beats a grouped
    convolution with a different kernel per clip on the CPU.
    """
    n, c, t, h, w = x.shape
    if k // 2 >= min(h, w):
        raise ValueError(f"blur kernel {k} is too large for {h}x{w} frames.")
    y = rearrange(x, "n c t h w -> n (c t h) w") @ blur_matrices(sigma, k, w, padding).to(x.dtype)  # along W
    y = rearrange(y, "n (ct h) w -> n ct h w", h=h)
    y = blur_matrices(sigma, k, h, padding).to(x.dtype).transpose(1, 2)[:, None] @ y  # along H
    return rearrange(y, "n (c t) h w -> n c t h w", c=c)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(x >= threshold, 1 - x, x)


def _where_some(x: torch.Tensor, on: torch.Tensor, fn, sync_free: bool = False) -> torch.Tensor:
    """x with fn applied to the clips where ``on`` is set. Only those are computed, which reads ``on`` on the
    host; ``sync_free`` computes every clip and selects, reading nothing (may write into x)."""
    if sync_free:
        return torch.where(on.view(-1, 1, 1, 1, 1), fn(x, slice(None)), x)
    idx = on.nonzero()[:, 0]
    if len(idx) == len(x):
        return fn(x, idx)
    if len(idx):
        x.index_copy_(0, idx, fn(x[idx], idx))
    return x


STAGES = ("crop", "colour")  # the crop and flip; then the appearance changes (jitter, grayscale, blur, solarize)


def _apply_block(x: torch.Tensor, p: dict, cfg: AugmentConfig, sync_free: bool = False,
                 stages: tuple[str, ...] = STAGES) -> torch.Tensor:
    def some(on, fn):
        return _where_some(x, on, fn, sync_free)

    if "crop" in stages:
        x = resized_crop(x, p["box"], cfg.size, p["flip"])  # a new float tensor, which the steps below may overwrite
    if "colour" not in stages:
        return x
    x = some(p["jitter"], lambda v, i: color_jitter(v, p["factors"][i], p["order"][i], cfg.contrast_mean,
                                                    sync_free=sync_free))
    x = some(p["gray"], lambda v, i: grayscale(v).expand_as(v).contiguous())  # later steps write into x
    x = some(p["blur"], lambda v, i: gaussian_blur(v, p["sigma"][i], cfg.kernel, cfg.blur_padding))
    x = some(p["solarize"], lambda v, i: solarize(v, cfg.solarize_threshold))
    return x


# On the CPU the batch goes through in blocks of about this many output floats (8 MB): every op then
# reads and writes tensors that stay in the cache, and memory the allocator hands back is reused
# instead of being faulted in afresh, which the whole batch (77 MB of floats at batch 32) is not.
# Blocks of 2-4 clips of 16 x 112 x 112 were fastest on the course's 2-core machine.
CPU_BLOCK_FLOATS = 2 ** 21


def block_size(n: int, per_clip: int, device: torch.device) -> int:
    """How many of n clips ``apply`` augments at a time: all on a GPU, a cache-sized block on the CPU."""
    return n if device.type != "cpu" else max(1, min(n, CPU_BLOCK_FLOATS // per_clip))


def apply(x: torch.Tensor, p: dict, cfg: AugmentConfig, block: int | None = None,
          sync_free: bool | None = None, stages: tuple[str, ...] = STAGES) -> torch.Tensor:
    """Augment N clips (uint8, or float in [0, 1]) with the parameters of ``sample_params``, one set per clip.

    Every op is batched over the clips of a block; ``block`` clips at a time (default:
    ``block_size``). The parameters are drawn beforehand, so the result does not depend on it
    (up to float rounding). ``sync_free`` (default: off the CPU) never reads a parameter on
    the host, so a GPU step does not wait for the device here: the optional ops run on every
    clip and each clip keeps its own result. The CPU computes only the clips that need an op.
    ``stages``: both (the default), or only the crop ("crop"), or only the colour changes ("colour") of clips
    already cropped, which are then written into.
    """
    n, c, t = x.shape[:3]
    sync_free = x.device.type != "cpu" if sync_free is None else sync_free
    block = block or block_size(n, c * t * cfg.size ** 2, x.device)
    if block >= n:
        return _apply_block(x, p, cfg, sync_free, stages)
    out = x if "crop" not in stages else torch.empty(n, c, t, cfg.size, cfg.size, device=x.device)
    for i in range(0, n, block):
        part = slice(i, i + block)
        out[part] = _apply_block(x[part], {k: v[part] for k, v in p.items()}, cfg, sync_free, stages)
    return out


def augment(clips: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), g: torch.Generator | None = None,
            *, return_params: bool = False, block: int | None = None, sync_free: bool | None = None,
            between: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Augment a batch of clips B x C x T x H x W -> float B x C x T x size x size in [0, 1].

    ``g`` (a torch.Generator on the clips' device) makes the views reproducible. ``block``
    and ``sync_free``: see ``apply``. ``between`` changes the cropped clips (B x C x T x size x size,
    floats in [0, 1]) before their colour changes: FAME's foreground merging (``debias.fame``).
    """
    x = clips if clips.dtype == torch.uint8 else clips.float()  # the crop converts uint8 itself
    b, _, t, h, w = x.shape
    n = b if cfg.consistent else b * t  # every frame is its own one-frame clip when not consistent
    p = sample_params(cfg, n, h, w, g, x.device)
    x = x if cfg.consistent else rearrange(x, "b c t h w -> (b t) c 1 h w")
    if between is None:
        out = apply(x, p, cfg, block, sync_free)
    else:
        out = apply(x, p, cfg, block, sync_free, stages=("crop",))
        out = out if cfg.consistent else rearrange(out, "(b t) c 1 h w -> b c t h w", b=b)
        out = between(out)
        out = out if cfg.consistent else rearrange(out, "b c t h w -> (b t) c 1 h w")
        out = apply(out.contiguous(), p, cfg, block, sync_free, stages=("colour",))
    out = out if cfg.consistent else rearrange(out, "(b t) c 1 h w -> b c t h w", b=b)
    return (out, p) if return_params else out


class VideoAugment(nn.Module):
    """``augment`` as a module, so a method can hold it and run it on the training device."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig(), **changes):
        super().__init__()
        self.cfg = cfg.replace(**changes)

    def forward(self, clips: torch.Tensor, g: torch.Generator | None = None, between=None) -> torch.Tensor:
        with full_precision(clips):  # a training step's autocast would make the blur's matrix products bf16
            return augment(clips, self.cfg, g, between=between)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.cfg).items())


def torchvision_pipeline(cfg: AugmentConfig = AugmentConfig()):
    """The same augmentation as a per-clip torchvision v2 pipeline (for comparisons and benchmarks).

    Apply it to one clip as a T x C x H x W float tensor: v2 draws one set of parameters
    per call, so all frames of the clip share them.
    """
    from torchvision.transforms import v2

    crop = {"resized": v2.RandomResizedCrop(cfg.size, scale=cfg.scale, ratio=cfg.ratio, antialias=False),
            "random": v2.RandomCrop(cfg.size), "center": v2.CenterCrop(cfg.size)}[cfg.crop]
    return v2.Compose([
        crop,
        v2.RandomHorizontalFlip(cfg.flip),
        v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter),
        v2.RandomGrayscale(cfg.grayscale),
        v2.RandomApply([v2.GaussianBlur(cfg.kernel, cfg.blur_sigma)], p=cfg.blur),
        v2.RandomSolarize(cfg.solarize_threshold, p=cfg.solarize),
    ])


# ----------------------------------------------------------------------------- time
def residual_frames(x: torch.Tensor) -> torch.Tensor:
    """IIC's residual view: (x_t - x_{t-1} + 1) / 2, wrapping around in time (as the public code's roll).

    x: B x C x T x H x W in [0, 1] -> same shape, in [0, 1].
    """
    return (x - torch.roll(x, 1, dims=2) + 1) / 2


def frame_repeat(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Intra-negative: one random frame of each clip tiled over all T positions (no motion at all)."""
    b, _, t = x.shape[:3]
    idx = torch.randint(0, t, (b,), generator=g, device=x.device)
    frame = x[torch.arange(b, device=x.device), :, idx]  # B x C x H x W
    return repeat(frame, "b c h w -> b c t h w", t=t)


SHUFFLE_CHUNKS = 4  # IIC's chunk shuffle: four chunks, two of them swapped


def chunk_shuffle(x: torch.Tensor, chunks: int = SHUFFLE_CHUNKS, g: torch.Generator | None = None) -> torch.Tensor:
    """Intra-negative: cut each clip into ``chunks`` equal chunks and swap two different ones (IIC)."""
    b, _, t = x.shape[:3]
    if t % chunks:
        raise ValueError(f"chunk_shuffle needs a clip length divisible by {chunks}, got {t}.")
    order = torch.arange(chunks, device=x.device).repeat(b, 1)  # B x chunks
    i = torch.randint(0, chunks, (b,), generator=g, device=x.device)
    j = (i + torch.randint(1, chunks, (b,), generator=g, device=x.device)) % chunks  # j != i
    rows = torch.arange(b, device=x.device)
    order[rows, i], order[rows, j] = j, i
    step = t // chunks
    frames = (order[:, :, None] * step + torch.arange(step, device=x.device)).flatten(1)  # B x T
    return x.gather(2, frames.view(b, 1, t, 1, 1).expand_as(x))


def reverse(x: torch.Tensor) -> torch.Tensor:
    """Intra-negative: the clip played backwards."""
    return x.flip(2)


INTRA_NEGATIVES = {"repeat": frame_repeat, "shuffle": chunk_shuffle, "reverse": lambda x, g=None: reverse(x)}
