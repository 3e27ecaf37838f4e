"""Looking at clips: a frame strip, an inline animation, a batch grid.

Every function accepts a clip as torch or NumPy, uint8 (0-255) or float (0-1), in
either layout the library uses: ``(C, T, H, W)`` (model side) or ``(T, H, W, C)``
(decoder side). Single-channel clips are shown in gray.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from matplotlib import animation

from .results import score_label


def to_frames(clip) -> np.ndarray:
    """Any clip -> uint8 NumPy (T, H, W, C)."""
    x = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    if x.ndim != 4:
        raise ValueError(f"a clip must have 4 dimensions, (C, T, H, W) or (T, H, W, C); got shape {x.shape}.")
    if x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = rearrange(x, "c t h w -> t h w c")
    if x.dtype != np.uint8:
        x = (np.clip(x.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return x


def _show(ax, frame: np.ndarray) -> None:
    ax.imshow(frame[..., 0] if frame.shape[-1] == 1 else frame, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def frame_strip(clip, n: int = 8, *, title: str | None = None, axes=None, frame_labels: bool = True):
    """Show ``n`` evenly spaced frames of one clip in a row; returns the figure."""
    frames = to_frames(clip)
    n = min(n, len(frames))
    picks = np.linspace(0, len(frames) - 1, n).round().astype(int)
    if axes is None:
        fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.8), squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    for ax, t in zip(axes, picks):
        _show(ax, frames[t])
        if frame_labels:
            ax.set_title(f"t={t}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def animate(clip, *, fps: int = 8, scale: float = 2.0, title: str | None = None):
    """An inline HTML animation of one clip (JavaScript player, works without a kernel)."""
    from IPython.display import HTML

    frames = to_frames(clip)
    h, w = frames.shape[1:3]
    fig, ax = plt.subplots(figsize=(scale * w / max(h, w) * 1.5, scale * h / max(h, w) * 1.5))
    _show(ax, frames[0])
    image = ax.images[0]
    if title:
        ax.set_title(title, fontsize=9)

    def step(t):
        image.set_data(frames[t][..., 0] if frames.shape[-1] == 1 else frames[t])
        return (image,)

    anim = animation.FuncAnimation(fig, step, frames=len(frames), interval=1000 / fps, blit=True)
    html = HTML(anim.to_jshtml(default_mode="loop"))
    plt.close(fig)
    return html


def gif(clip, *, fps: int = 8, scale: int = 3) -> bytes:
    """An animated GIF of one clip (looping, pixels enlarged ``scale`` times), as bytes.

    Unlike ``animate`` it needs no JavaScript, so an ``ipywidgets.Image`` can show it.
    """
    from io import BytesIO

    from PIL import Image

    frames = to_frames(clip)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(f) for f in frames]
    buf = BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def figure_png(fig, dpi: int = 80) -> bytes:
    """A figure as PNG bytes (the figure is closed)."""
    from io import BytesIO

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def batch_grid(clips, labels: Sequence[int] | None = None, class_names: Sequence[str] | None = None, *,
               n_frames: int = 6, max_rows: int = 8, title: str | None = None):
    """One row per clip of a batch ``(B, C, T, H, W)`` (or a list of clips), ``n_frames`` frames each."""
    clips = list(clips)[:max_rows]
    fig, axes = plt.subplots(len(clips), n_frames, figsize=(1.4 * n_frames, 1.5 * len(clips)), squeeze=False)
    for r, clip in enumerate(clips):
        frame_strip(clip, n_frames, axes=axes[r], frame_labels=(r == 0))
        if labels is not None:
            name = class_names[int(labels[r])] if class_names else str(int(labels[r]))
            axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def compare_plot(rows: list[dict], key: str, *, mode: str = "cpu", reference: str = "full", chance: float | None = None,
                 floor: str = "random_init", ceiling: str = "supervised", ax=None, title: str | None = None):
    """The learner's runs beside the committed reference for one score (``results.compare``'s rows): a bar
    for each, and where the rows hold them, the committed results at the learner's own budget; each reference's
    seed band as an error bar, and the floor and ceiling runs (random init, supervised) as lines, solid for
    the reference and dashed for the learner's run. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(rows) + 2), 3.2))
    x = np.arange(len(rows))
    bars = [("mine", None, f"your run ({mode})", "tab:blue")] if any(r["mine"] for r in rows) else []
    if any(r.get("here") for r in rows):
        bars.append(("here", "band_here", f"reference ({mode})", "tab:orange"))
    bars.append(("reference", "band", f"reference ({reference})", "tab:gray"))
    w = 0.8 / len(bars)
    for j, (field, band, label, color) in enumerate(bars):
        at = x - 0.4 + w * (j + 0.5)
        ax.bar(at, [r.get(field, {}).get(key, np.nan) for r in rows], w, label=label, color=color,
               alpha=1.0 if field == "mine" else 0.7)
        for i, r in enumerate(rows):
            if band and key in r.get(band, {}):
                lo, hi = r[band][key]
                ax.plot([at[i], at[i]], [lo, hi], color="k", lw=2, solid_capstyle="butt")
    by_name = {r["run"]: r for r in rows}
    for name, color in ((floor, "tab:red"), (ceiling, "tab:green")):
        r = by_name.get(name)
        if r is None:
            continue
        if key in r["reference"]:
            ax.axhline(r["reference"][key], color=color, lw=1, label=f"{r['title']} ({reference})")
        if key in r.get("here", {}):
            ax.axhline(r["here"][key], color=color, lw=1, ls="-.", label=f"{r['title']} (reference, {mode})")
        if key in r["mine"]:
            ax.axhline(r["mine"][key], color=color, lw=1, ls="--", label=f"{r['title']} ({mode})")
    if chance is not None:
        ax.axhline(chance, color="k", lw=0.8, ls=":", label="chance")
    ax.set_xticks(x, [r["title"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(score_label(key))
    ax.set_title(title or f"{key}: your run beside the reference (black bars: the seed bands)")
    ax.legend(fontsize=7, ncol=3)
    plt.tight_layout()
    return ax


def debias_plot(key: str = "linear", mode: str = "full", ax=None):
    """Every clip contrast with each published fix (``results.debias_scores``) as a grid: the colour is the score
    above the fix's own floor (``results.debias_floor``: random init, or a random network on residual frames), the
    text the score itself; "-" not measured, blank where the fix does not apply. Returns the axes."""
    from . import course, results
    scores = results.debias_scores(key, mode)
    methods = list(dict.fromkeys(m for m, _ in scores))
    fixes = list(dict.fromkeys(f for _, f in scores))
    above = np.full((len(methods), len(fixes)), np.nan)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.3 * len(fixes) + 2, 0.5 * len(methods) + 1.5))
    for i, m in enumerate(methods):
        for j, f in enumerate(fixes):
            if (m, f) not in scores:
                continue
            value, floor = scores[m, f], course.score(results.debias_floor(f), key, mode)
            if value is not None and floor is not None:
                above[i, j] = value - floor
            ax.text(j, i, "-" if value is None else f"{value:.1f}", ha="center", va="center", fontsize=8)
    lim = max(1.0, float(np.nanmax(np.abs(above)))) if np.isfinite(above).any() else 1.0
    im = ax.imshow(above, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(fixes)), fixes)
    ax.set_yticks(range(len(methods)), [course.spec(m).title for m in methods])
    ax.figure.colorbar(im, ax=ax, label=f"{key}: points above its floor")
    ax.set_title(f"{key}, {mode} mode: each method as published (none) and with each fix", fontsize=9)
    return ax
