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

Decoded frames are cached: when a dataset decodes to a fixed ``size`` and all of its videos,
decoded whole, fit in this process's frame cache (``$COURSE_FRAME_CACHE_MB``, 512 by default; 0
turns it off), a video is decoded whole the first time and every later clip of it is sliced
from memory. The frames are the same as a clip decode gives (``decode_frames`` is exact at any
index); only the time changes: the course's small datasets decode once per run and per process
instead of once per epoch. Each DataLoader worker keeps its own cache for the run.

Bad videos: with ``strict=False`` (the default) a video that cannot be decoded is
skipped: the item is taken from the next good video instead, a warning counts the
skips made so far in this process, and the video is not tried again. After
``max_skips`` bad videos in a row the dataset raises. ``strict=True`` raises
``VideoError`` naming the file at the first bad video.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from ..settings import SettingError
from ..video import VideoError, decode_clips, decode_frames, frame_timestamps
from .manifest import Manifest
from .samplers import ShortVideoError


def frame_cache_bytes() -> int:
    """The frame cache's size in this process: ``$COURSE_FRAME_CACHE_MB`` (default 512) in bytes."""
    value = os.environ.get("COURSE_FRAME_CACHE_MB", "").strip() or "512"
    try:
        mb = float(value)
    except ValueError:
        mb = -1
    if mb < 0:
        raise SettingError(f"COURSE_FRAME_CACHE_MB={value}: give the frame cache's size in MB, a number >= 0 (0: off).")
    return int(mb * 2 ** 20)


class FrameCache:
    """Whole decoded videos, uint8 (N, H, W, 3), least recently used first out, at most ``max_bytes``.

    One per process (``FRAMES``). A key names the file's path, inode, size, modification and change
    times, and the decode size, so a video written again under the same path is decoded again."""

    def __init__(self, max_bytes: int | None = None):
        self._max_bytes, self.bytes = max_bytes, 0
        self.hits = self.misses = 0
        self._videos: OrderedDict[tuple, np.ndarray] = OrderedDict()

    @property
    def max_bytes(self) -> int:
        if self._max_bytes is None:  # read when first needed, so a bad value fails where a dataset is made
            self._max_bytes = frame_cache_bytes()
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self._max_bytes = value
        self._shrink()

    def _shrink(self) -> None:
        """Drop the least recently used videos until the cache fits its size."""
        while self.bytes > self.max_bytes:
            self.bytes -= self._videos.popitem(last=False)[1].nbytes

    @staticmethod
    def key(path: str | os.PathLike, size: tuple[int, int]) -> tuple:
        st = os.stat(path)  # a file written again gets a new inode or change time, even with its old mtime
        return os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, tuple(size)

    def get(self, key: tuple) -> np.ndarray | None:
        frames = self._videos.get(key)
        if frames is None:
            self.misses += 1
            return None
        self._videos.move_to_end(key)
        self.hits += 1
        return frames

    def put(self, key: tuple, frames: np.ndarray) -> None:
        if frames.nbytes > self.max_bytes:
            return
        frames.setflags(write=False)  # shared by every later clip: slicing copies, nothing writes
        old = self._videos.pop(key, None)
        self.bytes += frames.nbytes - (old.nbytes if old is not None else 0)
        self._videos[key] = frames
        self._shrink()

    def clear(self) -> None:
        self._videos.clear()
        self.bytes = 0


FRAMES = FrameCache()  # this process's frame cache (a forked worker starts with a copy)


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
        cache: use the frame cache when it can hold every video of this dataset decoded whole
            (``size`` must be given); False always decodes clips from the file.
    """

    def __init__(self, manifest: Manifest | str | Path, sampler, *, split: str | None = None,
                 short_side: int | None = None, size: tuple[int, int] | None = None, strict: bool = False,
                 seed: int = 0, decode_threads: int = 1, max_skips: int = 20, crops: int = 1, cache: bool = True):
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
        total = self.decoded_bytes()
        self.cache = cache and total is not None and total <= FRAMES.max_bytes
        self._whole_failed: set[int] = set()  # videos a whole decode failed on (clips may still decode)

    def decoded_bytes(self) -> int | None:
        """Bytes of every video of this dataset decoded whole at ``size`` (None without ``size`` or frame counts)."""
        if self.size is None or any(not e.num_frames for e in self.manifest):
            return None
        return sum(e.num_frames for e in self.manifest) * self.size[0] * self.size[1] * 3

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
        whole = self._whole(index, path, ts) if self.cache else None  # N x H x W x C, or None
        if whole is not None and 0 <= frames.min() and frames.max() < len(whole):
            clips = whole[frames]  # S x T x H x W x C, a copy (an index out of range: the file decode names it)
        else:
            clips = decode_clips(path, frames, short_side=self.short_side, size=self.size, timestamps=ts,
                                 threads=self.decode_threads)  # S x T x H x W x C
        clips = rearrange(torch.from_numpy(clips), "s t h w c -> s c t h w")
        return three_crops(clips) if self.crops == 3 else clips

    def _whole(self, index: int, path: Path, ts: np.ndarray | None) -> np.ndarray | None:
        """Video ``index`` decoded whole at ``size``, from the frame cache or the file (then cached)."""
        if index in self._whole_failed:
            return None
        try:
            key = FrameCache.key(path, self.size)
        except OSError:  # missing or unreadable: the clip decode names the file in a VideoError
            return None
        frames = FRAMES.get(key)
        if frames is None:
            try:
                frames = decode_frames(path, np.arange(self.manifest[index].num_frames), size=self.size, timestamps=ts,
                                       threads=self.decode_threads)  # N x H x W x C
            except VideoError:  # e.g. fewer frames than the manifest says: let the clip decode decide
                self._whole_failed.add(index)
                return None
            FRAMES.put(key, frames)
        return frames

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
