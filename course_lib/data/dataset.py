"""A clip dataset over a manifest: decoded uint8 clips, label and video index.

Each item is a dict::

    clips: torch.uint8, (S, C, T, H, W)   S clips from the sampler, C = 3 (RGB)
    frames: torch.int64, (S, T)          the frame index of every clip frame
    label: int                           class index in manifest.classes
    index: int                           position of the video in the manifest

so a DataLoader batch has ``clips`` of shape ``(B, S, C, T, H, W)``. Clips stay uint8
until they reach the training device, where augmentation turns them into floats.

Randomness is drawn from ``numpy.random.default_rng([seed, epoch, index])``, so the
clips of an epoch do not depend on the number of DataLoader workers or their order;
call ``set_epoch`` at the start of every epoch, or index with ``(epoch, index)`` keys:
the training loop does, so its workers persist across epochs.

Bad videos: with ``strict=False`` (the default) a video that cannot be decoded is
skipped: the item is taken from the next good video instead, a warning counts the
skips made so far in this process, and the video is not tried again. After
``max_skips`` bad videos in a row the dataset raises. ``strict=True`` raises
``VideoError`` naming the file at the first bad video.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from ..video import VideoError, decode_clips, frame_timestamps
from .manifest import Manifest
from .samplers import ShortVideoError


def three_crops(clips: torch.Tensor) -> torch.Tensor:
    """Square crops of side min(H, W) at the start, centre and end of the longer axis of each clip.

    S x C x T x H x W -> 3 S x C x T x s x s, the three crops of clip i at 3 i, 3 i + 1, 3 i + 2.
    The offsets are CVRL's (``official/vision/ops/preprocess_ops_3d.py`` ``crop_image``): 0,
    round(L / 2 - s // 2) and L - s along the longer side L.
    """
    h, w = clips.shape[-2:]
    s, long = min(h, w), max(h, w)
    crops = []
    for offset in (0, round(long / 2 - s // 2), long - s):
        crops.append(clips[..., offset:offset + s, :] if h > w else clips[..., :, offset:offset + s])
    return rearrange(torch.stack(crops, 1), "s k c t h w -> (s k) c t h w")


class ClipDataset(Dataset):
    """Clips of the videos in ``manifest`` (one split of it, if ``split`` is given).

    Args:
        manifest: a ``Manifest`` or the path of a manifest file.
        sampler: a temporal sampler (``RandomClipSampler``, ``UniformClipSampler``...).
        split: keep only this split ("train", "test", ...).
        short_side: decode with the shorter side scaled to this many pixels.
        size: decode to exactly (height, width); needed to batch videos of mixed aspect.
        crops: 1, or 3 square crops of side min(H, W) at the start, centre and end of the longer
            axis of every clip (CVRL's test views), stacked after each clip: S becomes 3 S. With
            ``short_side`` this batches videos of mixed aspect too.
        strict: raise on the first bad video instead of skipping it.
        seed: base seed of the per-item generators.
        decode_threads: FFmpeg threads per decode (1, the default, suits DataLoader workers).
        max_skips: bad videos in a row after which even the lenient mode raises.
    """

    def __init__(self, manifest: Manifest | str | Path, sampler, *, split: str | None = None,
                 short_side: int | None = None, size: tuple[int, int] | None = None, strict: bool = False,
                 seed: int = 0, decode_threads: int = 1, max_skips: int = 20, crops: int = 1):
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, not {crops}.")
        manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        self.manifest = manifest.split(split) if split else manifest
        self.sampler = sampler
        self.short_side, self.size, self.crops = short_side, size, crops
        self.strict, self.seed, self.epoch = strict, seed, 0
        self.decode_threads, self.max_skips = decode_threads, max_skips
        self.labels = [self.manifest.label_index(e.label) for e in self.manifest]
        self.bad: dict[int, str] = {}  # index -> reason, per process
        self._timestamps: dict[int, np.ndarray] = {}  # VFR videos: frame pts, per process

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clip_indices(self, index: int, epoch: int | None = None) -> np.ndarray:
        """The (S, T) frame indices the sampler picks for video ``index`` in ``epoch`` (default: this epoch)."""
        entry = self.manifest[index]
        if not entry.num_frames:
            raise VideoError(f"{self.manifest.path(entry)}: the manifest has no frame count; run probe_manifest first.")
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        try:
            return self.sampler(entry.num_frames, rng)
        except ShortVideoError as e:
            raise VideoError(f"{self.manifest.path(entry)}: too short for the clip ({e}).") from None

    def load(self, index: int, frames: np.ndarray | None = None) -> torch.Tensor:
        """Decode the clips of video ``index``: uint8 (S, C, T, H, W). Raises VideoError."""
        entry = self.manifest[index]
        frames = self.clip_indices(index) if frames is None else frames
        path = self.manifest.path(entry)
        ts = None
        if entry.attrs.get("vfr"):
            if index not in self._timestamps:
                self._timestamps[index] = frame_timestamps(path)[0]
            ts = self._timestamps[index]
        clips = decode_clips(path, frames, short_side=self.short_side, size=self.size, timestamps=ts,
                             threads=self.decode_threads)  # S x T x H x W x C
        clips = rearrange(torch.from_numpy(clips), "s t h w c -> s c t h w")
        return three_crops(clips) if self.crops == 3 else clips

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Item ``index`` of this epoch, or ``(epoch, index)``."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        for attempt in range(self.max_skips + 1):
            i = (index + attempt) % len(self)
            if i in self.bad:
                continue
            try:
                frames = self.clip_indices(i, epoch)
                clips = self.load(i, frames)
            except VideoError as e:
                if self.strict:
                    raise
                self.bad[i] = str(e)
                warnings.warn(f"skipped a bad video ({len(self.bad)} so far in this process): {e}", stacklevel=2)
                continue
            frames = torch.from_numpy(frames).repeat_interleave(self.crops, 0)  # S x T (3 S with three crops)
            return {"clips": clips, "frames": frames, "label": self.labels[i], "index": i}
        raise VideoError(f"{self.manifest.root}: {self.max_skips} bad videos in a row from item {index}; "
                         f"last: {self.bad.get(i, '?')}")
