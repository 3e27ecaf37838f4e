"""Interactive explorers (ipywidgets) for notebook 06, each with a static figure of the same content.

* ``AugmentationExplorer``: sliders for the crop area and aspect range, jitter strength,
  blur and grayscale probability, a consistent / per-frame toggle and a reseed button;
  it shows two augmented views of one clip side by side, animated (a GIF).
* ``SamplerExplorer``: controls for CVRL's interval density (mode, power p), clip length and
  stride; it shows the density, a histogram of drawn gaps and the sampled clips on a
  timeline of the video.

The explorers keep what they last drew (``views``, ``gaps``, ``shown``) so tests and
readers can drive them programmatically: set a control's ``value`` and the explorer
re-renders. They draw into ``ipywidgets.Image`` widgets (GIF and PNG bytes), which need
no JavaScript and no output capture.
``augmentation_figure`` and ``sampler_figure`` draw the same content without a kernel.
"""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from . import viz
from .augment import AugmentConfig, augment
from .data.samplers import TemporalIntervalSampler, interval_pmf


# ----------------------------------------------------------------------------- augmentation
def augment_config(base: AugmentConfig, *, min_area: float, max_aspect: float, jitter: float, blur: float,
                   grayscale: float, consistent: bool) -> AugmentConfig:
    """The explorer's controls as an AugmentConfig (jitter strength s: brightness, contrast, saturation s, hue s/4)."""
    return base.replace(scale=(min_area, 1.0), ratio=(1 / max_aspect, max_aspect), jitter=1.0 if jitter > 0 else 0.0,
                        brightness=jitter, contrast=jitter, saturation=jitter, hue=min(jitter / 4, 0.5), blur=blur,
                        grayscale=grayscale, consistent=consistent)


def clip_views(clip: torch.Tensor, cfg: AugmentConfig, seed: int) -> torch.Tensor:
    """Two augmented views of one uint8 clip (C, T, H, W) -> float (2, C, T, size, size) in [0, 1]."""
    return augment(clip[None].expand(2, *clip.shape), cfg, torch.Generator().manual_seed(seed))


def side_by_side(views: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """(2, C, T, H, W) float views -> one uint8 clip (C, T, H, 2W + gap) with a white gap."""
    c, t, h, _ = views.shape[1:]
    sep = torch.ones(c, t, h, gap)
    return (torch.cat([views[0], sep, views[1]], dim=3) * 255).round().byte()


def augmentation_figure(clip: torch.Tensor, cfg: AugmentConfig, seed: int = 0, n_frames: int = 6):
    """Static figure: the clip and its two views, ``n_frames`` frames each."""
    views = clip_views(clip, cfg, seed)
    fig = viz.batch_grid([clip, (views[0] * 255).byte(), (views[1] * 255).byte()], n_frames=n_frames,
                         title=f"{'consistent' if cfg.consistent else 'per-frame'} augmentation, seed {seed}")
    for ax, name in zip(fig.axes[::n_frames], ["clip", "view 1", "view 2"]):
        ax.set_ylabel(name, fontsize=8)
    return fig


class AugmentationExplorer:
    """Two views of ``clip`` (uint8 C x T x H x W) under controls you move; ``.widget`` shows it."""

    def __init__(self, clip: torch.Tensor, base: AugmentConfig = AugmentConfig(), *, seed: int = 0):
        self.clip, self.base, self.seed = clip, base, seed
        style = {"description_width": "110px"}
        self.controls = {
            "min_area": W.FloatSlider(value=base.scale[0], min=0.05, max=1.0, step=0.05, description="min crop area",
                                      style=style),
            "max_aspect": W.FloatSlider(value=base.ratio[1], min=1.0, max=3.0, step=0.1, description="max aspect",
                                        style=style),
            "jitter": W.FloatSlider(value=base.brightness, min=0.0, max=1.0, step=0.05, description="jitter strength",
                                    style=style),
            "blur": W.FloatSlider(value=base.blur, min=0.0, max=1.0, step=0.1, description="blur prob.", style=style),
            "grayscale": W.FloatSlider(value=base.grayscale, min=0.0, max=1.0, step=0.1, description="grayscale prob.",
                                       style=style),
            "consistent": W.ToggleButtons(options=[("consistent", True), ("per frame", False)],
                                          value=base.consistent, description="in time", style=style),
        }
        self.reseed_button = W.Button(description="reseed", icon="refresh")
        self.reseed_button.on_click(lambda _: self.reseed())
        self.image = W.Image(format="gif")
        for c in self.controls.values():
            c.observe(lambda _: self.render(), names="value")
        self.widget = W.HBox([W.VBox([*self.controls.values(), self.reseed_button]),
                              W.VBox([W.Label("view 1 | view 2"), self.image])])
        self.views = None
        self.render()

    @property
    def cfg(self) -> AugmentConfig:
        return augment_config(self.base, **{k: c.value for k, c in self.controls.items()})

    def reseed(self) -> None:
        self.seed += 1
        self.render()

    def render(self) -> None:
        self.views = clip_views(self.clip, self.cfg, self.seed)  # 2 x C x T x size x size
        self.shown = self.image.value = viz.gif(side_by_side(self.views), scale=max(1, 160 // self.views.shape[-1]))

    def _ipython_display_(self):
        display(self.widget)


# ----------------------------------------------------------------------------- sampler
def draw_gaps(num_frames: int, clip_len: int, stride: int, mode: str, power: float, n: int = 2000,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n draws of the interval sampler: (starts n x 2, gaps n)."""
    sampler = TemporalIntervalSampler(clip_len=clip_len, stride=stride, mode=mode, power=power)
    rng = np.random.default_rng(seed)
    starts = np.stack([sampler(num_frames, rng)[:, 0] for _ in range(n)])
    return starts, np.abs(starts[:, 1] - starts[:, 0])


def sampler_figure(num_frames: int = 250, clip_len: int = 16, stride: int = 2, mode: str = "decreasing",
                   power: float = 1.0, *, n: int = 2000, seed: int = 0, show_pairs: int = 6):
    """Static figure: the density P(t), a histogram of drawn gaps, and a few clip pairs on the video's timeline."""
    span = (clip_len - 1) * stride + 1
    m = num_frames - span + 1
    starts, gaps = draw_gaps(num_frames, clip_len, stride, mode, power, n, seed)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3))
    if m >= 1:
        t = np.arange(m)
        ax[0].plot(t, interval_pmf(m, mode, power), lw=2)
        ax[1].hist(gaps, bins=min(40, m), range=(0, m), density=True, alpha=0.7, label=f"{n} draws")
        ax[1].plot(t, interval_pmf(m, mode, power), "k--", lw=1, label="P(t)")
        ax[1].legend(fontsize=8)
    ax[0].set_title(f"P(t), {mode}, p = {power:g}"); ax[0].set_xlabel("gap t between clip starts (frames)")
    ax[1].set_title("drawn gaps"); ax[1].set_xlabel("gap (frames)")
    for i, (a, b) in enumerate(starts[:show_pairs]):
        for s, color in ((a, "tab:blue"), (b, "tab:orange")):
            ax[2].broken_barh([(s, span)], (i - 0.35, 0.7), color=color, alpha=0.7)
    ax[2].set_xlim(0, num_frames); ax[2].set_yticks(range(min(show_pairs, len(starts))))
    ax[2].set_xlabel(f"frame (video of {num_frames})"); ax[2].set_ylabel("draw")
    ax[2].set_title(f"clip pairs ({clip_len} frames, stride {stride})")
    fig.tight_layout()
    return fig


class SamplerExplorer:
    """CVRL's temporal interval sampler under controls; ``.gaps`` holds the gaps last drawn."""

    def __init__(self, num_frames: int = 250, *, n: int = 2000, seed: int = 0):
        self.num_frames, self.n, self.seed = num_frames, n, seed
        style = {"description_width": "90px"}
        self.controls = {
            "mode": W.Dropdown(options=["decreasing", "uniform", "increasing"], value="decreasing",
                               description="density", style=style),
            "power": W.FloatSlider(value=1.0, min=0.25, max=4.0, step=0.25, description="power p", style=style),
            "clip_len": W.IntSlider(value=16, min=4, max=32, step=4, description="clip length", style=style),
            "stride": W.IntSlider(value=2, min=1, max=4, description="stride", style=style),
        }
        self.image = W.Image(format="png")
        for c in self.controls.values():
            c.observe(lambda _: self.render(), names="value")
        self.widget = W.VBox([W.HBox(list(self.controls.values())[:2]), W.HBox(list(self.controls.values())[2:]),
                              self.image])
        self.gaps = self.figure = None
        self.render()

    @property
    def settings(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def render(self) -> None:
        s = self.settings
        _, self.gaps = draw_gaps(self.num_frames, s["clip_len"], s["stride"], s["mode"], s["power"], self.n,
                                 self.seed)
        self.figure = sampler_figure(self.num_frames, n=self.n, seed=self.seed, **s)
        self.shown = self.image.value = viz.figure_png(self.figure)

    def _ipython_display_(self):
        display(self.widget)
