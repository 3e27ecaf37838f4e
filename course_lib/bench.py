"""Throughput measurements shared by notebook 01 and ``python -m course_lib bench``."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from .data.dataset import ClipDataset
from .data.manifest import Manifest, VideoEntry
from .data.samplers import RandomClipSampler
from .data.synth import CLASSES, PRESETS, render, sample_params
from .video import decode_clips, decode_from_start, write_video


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
    """Steady-state clips per second of a DataLoader over ``dataset``.

    The first batch is not timed: it includes starting the worker processes, a one-off
    cost that persistent workers pay once per run, not once per epoch.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    it = iter(loader)
    next(it)  # warm-up: worker start-up
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(it, None)
        if batch is None:
            break
        n += batch["clips"].shape[0] * batch["clips"].shape[1]
    return n / (time.perf_counter() - t0)


def long_videos(folder, *, count: int = 8, seconds: float = 10.0, size: int = 128, keyframe_interval: int = 16,
                seed: int = 0) -> Manifest:
    """``count`` built-in-style videos of ``seconds`` each (25 fps), for decode benchmarks."""
    folder = Path(folder)
    params = sample_params(PRESETS["quick"])
    rng = np.random.default_rng(seed)
    entries = []
    for k in range(count):
        p = dict(params[int(rng.integers(len(params)))], num_frames=int(seconds * 25), seed=seed + k)
        write_video(folder / f"long_{k}.mp4", render(p, size), keyframe_interval=keyframe_interval)
        entries.append(VideoEntry(f"long_{k}.mp4", p["label"], "test", p["num_frames"], 25.0))
    return Manifest(folder, list(CLASSES), entries)


def decode_benchmark(manifest: Manifest, *, clip_len: int = 16, short_side: int = 128, clips: int = 128,
                     workers: tuple[int, ...] = (0, 1, 2), long_seconds: float = 10.0, seed: int = 0) -> dict:
    """Clips/s: seek vs from-start on ``manifest`` and on long videos, and DataLoader workers."""
    results = {"clip_len": clip_len, "short_side": short_side, "clips": clips, "rows": []}

    def row(what, data, clips_per_s, **extra):
        results["rows"].append({"what": what, "data": data, "clips_per_s": round(clips_per_s, 1), **extra})

    def seek_vs_start(data_name: str, m: Manifest) -> None:  # both sides measured in this run
        seek, start = (clip_decode_rate(m, clip_len=clip_len, short_side=short_side, clips=clips, seek=s, seed=seed)
                       for s in (True, False))
        row("seek + decode (course_lib)", data_name, seek, ratio=round(seek / start, 2))
        row("decode from the start", data_name, start, ratio=1.0)

    seek_vs_start("built-in", manifest)
    with tempfile.TemporaryDirectory() as tmp:
        seek_vs_start(f"{long_seconds:g} s videos", long_videos(tmp, seconds=long_seconds, size=short_side))
    ds = ClipDataset(manifest, RandomClipSampler(clip_len=clip_len), short_side=short_side, seed=seed)
    base = None
    for w in workers:
        rate = loader_rate(ds, num_workers=w, batch_size=8, batches=max(1, clips // 8))
        base = base or rate
        row(f"DataLoader, {w} workers", "built-in", rate, ratio=round(rate / base, 2))
    return results


def format_table(results: dict) -> str:
    """A plain-text table of ``decode_benchmark`` rows."""
    lines = [f"{'what':32s} {'data':16s} {'clips/s':>9s} {'ratio':>6s}"]
    for r in results["rows"]:
        lines.append(f"{r['what']:32s} {r['data']:16s} {r['clips_per_s']:9.1f} {r.get('ratio', ''):>6}")
    return "\n".join(lines)
