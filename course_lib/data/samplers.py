"""Temporal samplers: which frame indices of a video make up each clip.

A sampler is called with a video's frame count and a NumPy generator and returns an
int64 array of shape ``(num_clips, clip_len)``. All frames of all clips are decoded in
one pass by ``course_lib.video.decode_clips``.

A clip spans ``(clip_len - 1) * stride + 1`` frames. When a video is shorter than that,
``short="loop"`` wraps the indices around (frame ``i`` becomes ``i mod num_frames``, as
CVRL's code does) and ``short="error"`` raises ``ShortVideoError``, which the dataset
reports with the file's name.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ShortVideoError", "RandomClipSampler", "UniformClipSampler", "OrderedClipsSampler", "RandomStrideSampler",
           "TemporalIntervalSampler", "interval_pmf", "clip_span"]


class ShortVideoError(ValueError):
    """The video has fewer frames than one clip spans."""


def clip_span(clip_len: int, stride: int) -> int:
    """Number of frames one clip covers, first to last."""
    return (clip_len - 1) * stride + 1


def _clips(starts: np.ndarray, clip_len: int, stride: int, num_frames: int) -> np.ndarray:
    """(S,) starts -> (S, clip_len) indices, wrapped into [0, num_frames)."""
    return (starts[:, None] + stride * np.arange(clip_len)[None, :]) % num_frames


@dataclass(frozen=True)
class _ClipSampler:
    clip_len: int = 16  # frames per clip
    stride: int = 1  # step between frames of a clip
    num_clips: int = 1  # clips per video
    short: str = "loop"  # a video shorter than a clip: "loop" (wrap indices) or "error"

    def __post_init__(self):
        if self.clip_len < 1 or self.stride < 1 or self.num_clips < 1:
            raise ValueError(f"clip_len, stride and num_clips must be >= 1 (got {self.clip_len}, {self.stride}, "
                             f"{self.num_clips}).")
        if self.short not in ("loop", "error"):
            raise ValueError(f"short must be 'loop' or 'error' (got {self.short!r}).")

    @property
    def span(self) -> int:
        return clip_span(self.clip_len, self.stride)

    def _too_short(self, num_frames: int) -> bool:
        if num_frames >= self.span:
            return False
        if self.short == "error":
            raise ShortVideoError(f"the video has {num_frames} frames but a clip spans {self.span}")
        return True


@dataclass(frozen=True)
class RandomClipSampler(_ClipSampler):
    """``num_clips`` clips at independent uniformly random starts (training).

    ``stride=1`` gives consecutive frames; larger strides skip frames. With
    ``num_clips > 1`` it gives several clips per video (e.g. two views for SimCLR).
    """

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        last_start = num_frames - 1 if self._too_short(num_frames) else num_frames - self.span
        starts = rng.integers(0, last_start + 1, size=self.num_clips)
        return _clips(starts, self.clip_len, self.stride, num_frames)


@dataclass(frozen=True)
class UniformClipSampler(_ClipSampler):
    """``num_clips`` clips whose centres are evenly spaced over the video (testing).

    Deterministic: the generator is ignored. Clip ``k`` is centred on
    ``(k + 0.5) * num_frames / num_clips``, as in the IIC/DualVar retrieval protocol,
    then shifted to lie inside the video.
    """

    num_clips: int = 10

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        self._too_short(num_frames)
        centres = (np.arange(self.num_clips) + 0.5) * num_frames / self.num_clips
        starts = np.floor(centres - (self.span - 1) / 2).astype(np.int64)
        starts = np.clip(starts, 0, max(num_frames - self.span, 0))
        return _clips(starts, self.clip_len, self.stride, num_frames)


@dataclass(frozen=True)
class OrderedClipsSampler(_ClipSampler):
    """``num_clips`` clips in temporal order, ``gap`` frames apart, at a random start (VCOP).

    VCOP's setting is 3 clips of 16 frames with 8 frames between them.
    """

    num_clips: int = 3
    gap: int = 8

    @property
    def total_span(self) -> int:
        return self.num_clips * self.span + (self.num_clips - 1) * self.gap

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        room = num_frames - self.total_span
        if room < 0 and self.short == "error":
            raise ShortVideoError(f"the video has {num_frames} frames but {self.num_clips} clips span {self.total_span}")
        start = int(rng.integers(0, max(room, 0) + 1))
        starts = start + np.arange(self.num_clips) * (self.span + self.gap)
        return _clips(starts, self.clip_len, self.stride, num_frames)


@dataclass(frozen=True)
class RandomStrideSampler(_ClipSampler):
    """Clips whose frame stride is drawn from ``strides`` (playback-speed prediction)."""

    strides: tuple[int, ...] = (1, 2, 4, 8)

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        out = []
        for _ in range(self.num_clips):
            stride = int(rng.choice(self.strides))
            span = clip_span(self.clip_len, stride)
            if span > num_frames and self.short == "error":
                raise ShortVideoError(f"the video has {num_frames} frames but a clip at stride {stride} spans {span}")
            start = rng.integers(0, max(num_frames - span, 0) + 1, size=1)
            out.append(_clips(start, self.clip_len, stride, num_frames)[0])
        return np.stack(out)


INTERVAL_MODES = ("decreasing", "uniform", "increasing")


def interval_pmf(num_starts: int, mode: str = "decreasing", power: float = 1.0) -> np.ndarray:
    """P(t) of the gap t = 0 .. M-1 between two clip starts, M = ``num_starts`` (CVRL, section 3.1).

    decreasing: P(t) proportional to 1 - (t / M)^p (p = 1: linear, the paper's default);
    uniform: constant; increasing: proportional to (t / M)^p, the ablation's opposite.
    """
    if mode not in INTERVAL_MODES:
        raise ValueError(f"interval mode {mode!r} is not one of {', '.join(INTERVAL_MODES)}.")
    if power <= 0:
        raise ValueError(f"interval power must be > 0 (got {power}).")
    t = np.arange(num_starts) / num_starts
    w = {"decreasing": 1 - t ** power, "uniform": np.ones_like(t), "increasing": t ** power}[mode]
    if w.sum() == 0:  # one start only (M = 1) in increasing mode
        w = np.ones_like(t)
    return w / w.sum()


@dataclass(frozen=True)
class TemporalIntervalSampler(_ClipSampler):
    """Two clips per video whose start gap follows ``interval_pmf`` (CVRL's temporal interval sampler).

    With M = num_frames - (clip_len - 1) * stride possible starts, the gap t is drawn by
    inverse-CDF sampling of P(t), the first start uniformly in [0, M - t), the second t
    frames later, and the two are returned in random order. Nearby clips share more, so a
    decreasing P(t) keeps positives similar enough to learn from while still varying them.
    A video shorter than one clip gets two independent starts with wrapped indices.
    """

    num_clips: int = 2
    mode: str = "decreasing"
    power: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.num_clips != 2:
            raise ValueError(f"the temporal interval sampler draws 2 clips (got num_clips={self.num_clips}).")
        interval_pmf(1, self.mode, self.power)  # validates mode and power

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        if self._too_short(num_frames):
            starts = rng.integers(0, num_frames, size=2)
        else:
            m = num_frames - self.span + 1  # possible starts
            cdf = np.cumsum(interval_pmf(m, self.mode, self.power))
            gap = int(min(np.searchsorted(cdf, rng.random(), side="right"), m - 1))  # inverse CDF
            first = int(rng.integers(0, m - gap))
            starts = np.array([first, first + gap])
            if rng.random() < 0.5:
                starts = starts[::-1].copy()
        return _clips(starts, self.clip_len, self.stride, num_frames)
