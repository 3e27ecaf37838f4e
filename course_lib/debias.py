"""Published fixes for the static shortcut: the ``debias`` option of every clip-contrast method.

Two clips of one video share their whole appearance, so a clip contrast can pair them by
appearance alone and never look at motion (notebook 04). Each fix takes that shortcut
away in its own way; ``debias`` names one of them, or a list (``["be", "intra"]``), and
``"none"`` (the default) is the paper's form of the method.

* ``intra``: IIC's intra-video negatives (Tao, Wang, Yamasaki, ACM MM 2020; BestJuly/IIC
  ``gen_neg.py``). From the query clip a negative is made with the same appearance and no
  motion (one random frame repeated through the clip, IIC's default; with ``residual``, two of
  its four chunks swapped, since the residual frames of a repeated frame are a constant clip), added to the
  method's own contrast as one more negative of that query (``losses.nt_xent`` and
  ``losses.moco_loss``, ``negatives=``). Methods without negatives (BYOL) refuse it.
* ``residual``: the network sees residual frames (x_t - x_{t-1} + 1) / 2 of every clip
  after its augmentation, which keep motion and drop most static appearance (IIC's second
  view; DCLR, Ding et al., ACM MM 2022, Mark12Ding/DCLR).
* ``be``: Background Erasing (Wang et al., *Removing the Background by Adding the
  Background*, CVPR 2021). FingerRec/BE ``src/Contrastive/augment/basic_augmentation/
  mixup_methods.py``, ``SpatialMixup`` version 2: lambda = U(0, 1) x 0.3, one draw per
  batch; each clip adds one random frame of its own to all of its frames,
  x_t <- (1 - lambda) x_t + lambda x_j. ``pt.py`` ``train_be`` makes the query clip so and
  contrasts it with a clean key: the mixed view is pulled to the clean one.
* ``fame``: foreground-background merging (Ding et al., *Motion-aware Contrastive Video
  Representation Learning via Foreground-background Merging*, CVPR 2022). Mark12Ding/FAME
  ``moco/loader.py`` (class ``FAME``): a foreground mask from frame differences, refined by
  colour histograms, keeps the clip's moving part and pastes it onto the background of
  another clip of the batch. ``train.py`` applies it to the query clip only, after the crop
  and before the colour augmentation, which is where ``Debias.query`` puts it too.

Where each applies in a method: ``Debias.query`` makes the first view (MoCo's query,
SimCLR's and CVRL's view 1, DualVar's c1, BYOL's first clip) with BE and FAME,
``Debias.negative`` the intra-negatives of that view, and ``Debias.seen`` turns every clip
the network sees into residual frames. Every fix runs on the device without reading a
value on the host.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from einops import rearrange, repeat
from torch import nn

from .augment import SHUFFLE_CHUNKS, chunk_shuffle, frame_repeat, gaussian_blur, residual_frames, rgb_to_hsv
from .settings import SettingError

FIXES = ("intra", "residual", "be", "fame")  # in the order they apply: no fix depends on the order given
NONE = "none"
BE_ALPHA = 0.3  # SpatialMixup(0.3, ...) in GenPositive (FingerRec/BE src/Contrastive/augment/gen_positive.py)
FAME_BETA = 0.5  # the share of pixels kept as foreground (FAME's --beta default)
HSV_BINS = 10  # FAME's 10 x 10 x 10 colour histogram


def parse(value: Any) -> tuple[str, ...]:
    """``"none"`` -> (); ``"be"`` -> ("be",); ``["intra", "be"]`` -> ("intra", "be"), in ``FIXES`` order.
    ValueError (one line) for anything else."""
    items = [value] if isinstance(value, str) or value is None else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"debias {value!r} is not a fix or a list of fixes.")
    items = [v for v in items if v != NONE]
    unknown = [v for v in items if v not in FIXES]
    if unknown:
        raise ValueError(f"debias {unknown[0]!r} is not one of {NONE}, {', '.join(FIXES)}.")
    return tuple(f for f in FIXES if f in items)


def rule(allowed: tuple[str, ...] = FIXES, *, why: str = "") -> Callable[[str, Any], Any]:
    """The option rule of ``debias`` for a method that takes the fixes in ``allowed`` (``why``: why not the rest)."""
    def check(name: str, value: Any) -> Any:
        text = f"{NONE}, one of {', '.join(allowed)}, or a list of them"
        try:
            fixes = parse(value)
        except ValueError as e:
            raise SettingError(f"setting {name}={value!r} is not allowed: {str(e).rstrip('.')}; {name} must be "
                               f"{text}.") from None
        refused = [f for f in fixes if f not in allowed]
        if refused:
            raise SettingError(f"setting {name}={value!r} is not allowed: {why or refused[0] + ' does not apply'}; "
                               f"{name} must be {text}.")
        return value
    return check


def clip_problem(clip_len: int, value: Any) -> str | None:
    """Why clips of ``clip_len`` frames cannot take the fixes ``value``, or None."""
    fixes = parse(value)
    if clip_len < 2 and fixes:
        return f"debias {fixes[0]} needs clips of at least 2 frames (it works on time)"
    if {"intra", "residual"} <= set(fixes) and clip_len % SHUFFLE_CHUNKS:
        return (f"debias intra with residual takes IIC's chunk shuffle as the negative, which cuts a clip into "
                f"{SHUFFLE_CHUNKS} chunks: clip_len must be a multiple of it")
    return None


def input_view(options: dict) -> str:
    """The input a run's network was trained on, and is read on: "residual" for ``debias`` with residual (or a
    ``view="residual"`` option: supervised training, a random init read on residual frames), else "rgb"."""
    if "residual" in parse(options.get("debias", NONE)):
        return "residual"
    return options.get("view", "rgb")


# ----------------------------------------------------------------------------- Background Erasing
def background_erase(x: torch.Tensor, *, alpha: float = BE_ALPHA, lam: torch.Tensor | None = None,
                     frames: torch.Tensor | None = None, g: torch.Generator | None = None) -> torch.Tensor:
    """BE's intra-video mixup: x_t <- (1 - lam) x_t + lam x_j for every frame t of each clip.

    x: B x C x T x H x W (floats, any range: the mix is affine); lam ~ U(0, alpha), one for the batch;
    frames: B indices j, one random frame of each clip. Both are drawn on x's device unless given.
    """
    b, _, t = x.shape[:3]
    if lam is None:
        lam = torch.rand((), generator=g, device=x.device) * alpha
    if frames is None:
        frames = torch.randint(0, t, (b,), generator=g, device=x.device)
    static = x[torch.arange(b, device=x.device), :, frames]  # B x C x H x W
    return torch.lerp(x, repeat(static, "b c h w -> b c t h w", t=t), lam)


# ----------------------------------------------------------------------------- FAME
def _minmax(m: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each map of B x H x W shifted to min 0 and divided by its max (+ eps), as FAME's ``norm_batch``."""
    flat = m.flatten(1)
    flat = flat - flat.amin(1, keepdim=True)
    return (flat / (flat.amax(1, keepdim=True) + eps)).view_as(m)


def _blur(m: torch.Tensor) -> torch.Tensor:
    """FAME's Gaussian blur of B x H x W maps: kernel int(0.1 W) rounded to odd, sigma kernel / 3, reflect padding
    (kornia's ``GaussianBlur2d`` default)."""
    k = int(0.1 * m.shape[-1]) // 2 * 2 + 1
    if k < 3:
        return m
    sigma = torch.full((len(m),), k / 3, device=m.device, dtype=m.dtype)
    return gaussian_blur(m[:, None, None], sigma, k)[:, 0, 0]


def _colour_bins(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W in [0, 1] -> B x (H W) bin of FAME's colour histogram, 0 to 999.

    FAME maps hue and saturation to a point of the unit disc, (s cos 2 pi h, s sin 2 pi h), and
    bins its two coordinates and the value 10 ways each. Its hue is kornia's, already in radians
    (2 pi times ours), and the official code multiplies it by 2 pi once more; that is kept: it only
    changes which colours share a bin.
    """
    h, s, v = rgb_to_hsv(x.clamp(0, 1)).unbind(1)  # B x H x W each, h in [0, 1)
    angle = 2 * torch.pi * (2 * torch.pi * h)
    hx, hy = (s * torch.cos(angle) + 1) / 2, (s * torch.sin(angle) + 1) / 2
    n = HSV_BINS - 1
    # the official 1-based bins round(a * 9 + 1), minus 1: round(a * 9) would differ at halves (rounding to even),
    # which every grey pixel (s = 0: hx = hy = 1/2) meets
    hb, sb, vb = (torch.round(a * n + 1) - 1 for a in (hx, hy, v))
    return (hb + sb * HSV_BINS + vb * HSV_BINS ** 2).long().flatten(1).clamp(max=HSV_BINS ** 3 - 1)


def _histogram(bins: torch.Tensor) -> torch.Tensor:
    """B x K bin indices -> B x 1000 counts."""
    out = torch.zeros(len(bins), HSV_BINS ** 3, device=bins.device)
    return out.scatter_add_(1, bins, torch.ones_like(bins, dtype=out.dtype))


def fame_mask(x: torch.Tensor, beta: float = FAME_BETA, eps: float = 1e-8) -> torch.Tensor:
    """FAME's binary foreground mask of each clip, B x H x W (1: foreground).

    x: B x C x T x H x W in [0, 1].
    1. motion: the time-mean of |x_t - x_{t+1}| summed over colour, blurred and min-max normalised;
    2. seeds: its top half of the pixels is foreground, its bottom tenth background;
    3. a colour model: histograms of the seeds' colours (of the clip's time-mean frame) give each pixel
       p_fg / (p_fg + p_bg), the background histogram smoothed by one count per bin;
    4. that map blurred and normalised; its top ``beta`` of the pixels is the mask.
    """
    b, _, t, h, w = x.shape
    if t < 2:
        raise ValueError("FAME needs clips of at least 2 frames (its mask is made of frame differences).")
    motion = (x[:, :, :-1] - x[:, :, 1:]).abs().sum(1).mean(1)  # B x H x W
    motion = _minmax(_blur(motion), eps).flatten(1)  # B x HW
    bins = _colour_bins(x.mean(2))  # B x HW
    fg = _histogram(bins.gather(1, motion.topk(int(0.5 * h * w), dim=1).indices))  # B x 1000
    bg = _histogram(bins.gather(1, motion.topk(int(0.1 * h * w), dim=1, largest=False).indices)) + 1
    p_fg = (fg / (fg.sum(1, keepdim=True) + eps)).gather(1, bins)  # B x HW
    p_bg = (bg / (bg.sum(1, keepdim=True) + eps)).gather(1, bins)
    soft = _minmax(_blur((p_fg / (p_bg + p_fg)).view(b, h, w)), eps).flatten(1)
    keep = soft.topk(int(beta * h * w), dim=1).indices
    return torch.zeros_like(soft).scatter_(1, keep, 1.0).view(b, h, w)


def fame(x: torch.Tensor, *, beta: float = FAME_BETA, perm: torch.Tensor | None = None,
         g: torch.Generator | None = None) -> torch.Tensor:
    """FAME: each clip's foreground (``fame_mask``) on the background of clip perm[i] of the batch.

    x: B x C x T x H x W in [0, 1]; perm: a permutation of the batch (random, on x's device, unless given;
    as the official ``randperm`` it may leave a clip on its own background).
    """
    mask = rearrange(fame_mask(x, beta), "b h w -> b 1 1 h w")
    if perm is None:
        perm = torch.randperm(len(x), generator=g, device=x.device)
    return x[perm] * (1 - mask) + x * mask


# ----------------------------------------------------------------------------- in a method
class Debias(nn.Module):
    """The fixes a method was built with (``debias``), each applied where it belongs. A module without
    weights, so that a method prints it."""

    def __init__(self, value: Any = NONE):
        super().__init__()
        self.fixes = parse(value)

    def __contains__(self, fix: str) -> bool:
        return fix in self.fixes

    def __bool__(self) -> bool:
        return bool(self.fixes)

    def extra_repr(self) -> str:
        return "+".join(self.fixes) or NONE

    def query(self, augment: nn.Module, clips: torch.Tensor) -> torch.Tensor:
        """The first view of ``clips`` (B x C x T x H x W): ``augment``ed, with FAME between its crop and its colour
        changes (as FAME's ``train.py``) and BE after it (as BE's ``train_be``). Float, in [0, 1]."""
        x = augment(clips, between=fame if "fame" in self else None)
        return background_erase(x) if "be" in self else x

    def negative(self, x: torch.Tensor) -> torch.Tensor | None:
        """IIC's intra-negative of each query clip x (B x C x T x H x W): a random frame of it repeated
        (BestJuly/IIC ``gen_neg.py``, its default), or with ``residual`` two of its four chunks swapped (the residual
        frames of a repeated frame are one constant clip, the same for every video); None without ``intra``."""
        if "intra" not in self:
            return None
        return chunk_shuffle(x) if "residual" in self else frame_repeat(x)

    @staticmethod
    def logs(z: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None) -> dict:
        """What the training log records of the intra-negatives: the mean cosine of each query embedding z (B x D)
        with its positive and with its intra-negative; a negative far below the positive means the network tells
        a frozen clip from a moving one (which a motion detector does, without knowing the motion). Empty without
        intra."""
        if negative is None:
            return {}
        with torch.no_grad():
            cos = torch.nn.functional.cosine_similarity
            return {"cos_pos": cos(z, positive, dim=1).mean(), "cos_intra": cos(z, negative, dim=1).mean()}

    @staticmethod
    def key_logs(logits: torch.Tensor, temperature: float) -> dict:
        """``logs`` for MoCo's contrast with intra-negatives, from its logits (column 0 the positive, column 1 the
        intra-negative, each a cosine over the temperature)."""
        with torch.no_grad():
            return {"cos_pos": logits[:, 0].mean() * temperature, "cos_intra": logits[:, 1].mean() * temperature}

    def seen(self, *xs: torch.Tensor | None):
        """What the network sees of each clip batch: its residual frames with ``residual``, else itself (None
        stays None). One argument gives one result, several a tuple."""
        out = tuple(residual_frames(x) if x is not None and "residual" in self else x for x in xs)
        return out[0] if len(out) == 1 else out
