"""Throughput measurements shared by notebook 01 and ``python -m course_lib bench``."""
from __future__ import annotations

import time

import numpy as np
from torch.utils.data import DataLoader

from .data.manifest import Manifest
from .data.samplers import RandomClipSampler
from .video import decode_clips, decode_from_start


def clip_decode_rate(manifest: Manifest, *, clip_len: int = 16, stride: int = 1, short_side: int | None = 128,
                     clips: int = 64, seek: bool = True, seed: int = 0, threads: int = 1) -> float:
    """Clips per second for random ``clip_len``-frame clips of the manifest's videos, one process.

    ``seek=False`` uses the naive decoder that starts from frame 0 every time.
    """
    rng = np.random.default_rng(seed)
    sampler = RandomClipSampler(clip_len=clip_len, stride=stride)
    picks = rng.integers(0, len(manifest), size=clips)
    jobs = [(manifest.path(manifest[i]), sampler(manifest[i].num_frames, rng)) for i in picks]
    t0 = time.perf_counter()
    for path, idx in jobs:
        if seek:
            decode_clips(path, idx, short_side=short_side, threads=threads)
        else:
            decode_from_start(path, idx.reshape(-1), short_side=short_side, threads=threads)
    return clips / (time.perf_counter() - t0)


def loader_rate(dataset, *, num_workers: int, batch_size: int = 8, batches: int = 8) -> float:
    """Clips per second delivered by a DataLoader over ``dataset`` (start-up of the workers included)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        persistent_workers=False)
    n, t0 = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        n += batch["clips"].shape[0] * batch["clips"].shape[1]
        if i + 1 == batches:
            break
    return n / (time.perf_counter() - t0)
