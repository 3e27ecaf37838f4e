"""Throughput measurements shared by notebook 01 and ``python -m course_lib bench``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .augment import (JITTER_OPS, AugmentConfig, augment, block_size, crop_room, gaussian_blur, grayscale,
                      resized_crop, torchvision_pipeline)
from .augment import sample_params as augment_params

from .data.dataset import ClipDataset
from .data.manifest import Manifest, VideoEntry
from .data.samplers import RandomClipSampler
from .data.synth import CLASSES, PRESETS, render, sample_params
from .methods import build_method, sampler_for
from .models import create_model
from .phases import PHASES, PhaseClock, phase_record
from .machine import device_name
from .runtime import AUTOCAST, autocast, synchronize
from .train import use_channels_last
from .video import before_fork, decode_clips, decode_frames, decode_from_start, write_video


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
    before_fork(num_workers)
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


def jpeg_frames(manifest: Manifest, folder, *, short_side: int = 128, quality: int = 90) -> list[tuple[Path, int]]:
    """Every video of ``manifest`` as a folder of JPEG frames (``image_00001.jpg``, ...), the layout the
    public IIC and DualVar code train from; returns (folder, frame count) per video."""
    from PIL import Image

    out = []
    for k, entry in enumerate(manifest):
        d = Path(folder) / f"video_{k:05d}"
        d.mkdir(parents=True, exist_ok=True)
        frames = decode_frames(manifest.path(entry), np.arange(entry.num_frames), short_side=short_side)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(d / f"image_{i + 1:05d}.jpg", quality=quality)
        out.append((d, len(frames)))
    return out


def jpeg_clip_rate(videos: list[tuple[Path, int]], *, clip_len: int = 16, clips: int = 64, seed: int = 0) -> float:
    """Clips per second reading ``clip_len`` consecutive JPEG frames with PIL, one process."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sampler = RandomClipSampler(clip_len=clip_len)
    picks = rng.integers(0, len(videos), size=clips)
    jobs = [(videos[i][0], sampler(videos[i][1], rng)[0]) for i in picks]
    t0 = time.perf_counter()
    for d, idx in jobs:
        np.stack([np.asarray(Image.open(d / f"image_{i + 1:05d}.jpg").convert("RGB")) for i in idx])
    return clips / (time.perf_counter() - t0)


def decode_benchmark(manifest: Manifest, *, clip_len: int = 16, short_side: int = 128, clips: int = 128,
                     workers: tuple[int, ...] = (0, 1, 2), long_seconds: float = 10.0, seed: int = 0) -> dict:
    """Clips/s: seek vs from-start vs JPEG frames read with PIL, on ``manifest`` and on long videos;
    and DataLoader workers. Ratios are against decoding from the start, measured in the same run."""
    results = {"clip_len": clip_len, "short_side": short_side, "clips": clips, "rows": []}

    def row(what, data, clips_per_s, **extra):
        results["rows"].append({"what": what, "data": data, "clips_per_s": round(clips_per_s, 1), **extra})

    def seek_vs_start(data_name: str, m: Manifest, tmp: str) -> None:  # every side measured in this run
        seek, start = (clip_decode_rate(m, clip_len=clip_len, short_side=short_side, clips=clips, seek=s, seed=seed)
                       for s in (True, False))
        jpeg = jpeg_clip_rate(jpeg_frames(m, Path(tmp) / "jpeg", short_side=short_side), clip_len=clip_len,
                              clips=clips, seed=seed)
        row("seek + decode (course_lib)", data_name, seek, ratio=round(seek / start, 2))
        row("decode from the start", data_name, start, ratio=1.0)
        row("JPEG frames with PIL", data_name, jpeg, ratio=round(jpeg / start, 2))

    with tempfile.TemporaryDirectory() as tmp:
        seek_vs_start("built-in", manifest, tmp)
    with tempfile.TemporaryDirectory() as tmp:
        seek_vs_start(f"{long_seconds:g} s videos", long_videos(tmp, seconds=long_seconds, size=short_side), tmp)
    ds = ClipDataset(manifest, RandomClipSampler(clip_len=clip_len), short_side=short_side, seed=seed)
    base = None
    for w in workers:
        rate = loader_rate(ds, num_workers=w, batch_size=8, batches=max(1, clips // 8))
        base = base or rate
        row(f"DataLoader, {w} workers", "built-in", rate, ratio=round(rate / base, 2))
    return results


def _timed(fn, device: torch.device, repeats: int, before=None) -> float:
    """Seconds per call of fn, after one warm-up call (and ``before()``, if given); GPU work is waited for."""
    fn()
    synchronize(device)
    if before is not None:
        before()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / repeats


def augment_benchmark(*, batch: int = 32, clip_len: int = 16, size: int = 112, frames: tuple[int, int] = (128, 171),
                      device: str = "cpu", repeats: int = 3, cfg: AugmentConfig | None = None, seed: int = 0) -> dict:
    """Clips/s of the batched augmentation against a per-clip torchvision v2 pipeline, same ops and input.

    Input: a uint8 batch B x 3 x T x H x W on ``device``, as a loader delivers it. Both sides
    produce float clips in [0, 1] of size x size. The default config is SimCLR's with blur on
    half of the clips, so every operation runs. Rows "op: ..." give each op's own rate on
    every clip, so the table shows where the batched path spends its time.
    """
    dev = torch.device(device)
    cfg = cfg or AugmentConfig(size=size, blur=0.5)
    g = torch.Generator(device=dev).manual_seed(seed)
    clips = torch.randint(0, 256, (batch, 3, clip_len, *frames), dtype=torch.uint8, generator=g, device=dev)
    pipeline = torchvision_pipeline(cfg)

    def per_clip():
        return torch.stack([pipeline(c.transpose(0, 1).float() / 255).transpose(0, 1) for c in clips])

    batched_s = _timed(lambda: augment(clips, cfg, g), dev, repeats)
    per_clip_s = _timed(per_clip, dev, repeats)
    rows = [{"what": "batched (course_lib.augment)", "data": str(dev), "clips_per_s": round(batch / batched_s, 1),
             "ratio": round(per_clip_s / batched_s, 2)},
            {"what": "per clip (torchvision v2)", "data": str(dev), "clips_per_s": round(batch / per_clip_s, 1),
             "ratio": 1.0}]
    rows += _augment_op_rows(clips, cfg, augment_params(cfg, batch, *frames, g, dev), dev, repeats)
    return {"batch": batch, "clip_len": clip_len, "size": size, "input": list(frames), "device": str(dev),
            "threads": torch.get_num_threads(), "rows": rows}


def _augment_op_rows(clips: torch.Tensor, cfg: AugmentConfig, p: dict, dev: torch.device, repeats: int) -> list:
    """Where the batched augmentation spends its time: clips/s of each op alone on every clip of the
    batch, block by block as ``augment`` goes (jitter runs on a fraction of the clips, blur on another)."""
    n, c, t = clips.shape[:3]
    block = block_size(n, c * t * cfg.size ** 2, dev)
    parts = [slice(i, i + block) for i in range(0, n, block)]
    crops = [resized_crop(clips[s], p["box"][s], cfg.size, p["flip"][s]) for s in parts]
    ops = {"crop, resize, flip": lambda s, x: resized_crop(clips[s], p["box"][s], cfg.size, p["flip"][s]),
           **{f"jitter: {op.__name__.removeprefix('adjust_')}": (lambda s, x, op=op, j=j: op(x, p["factors"][s, j]))
              for j, op in enumerate(JITTER_OPS)},
           "grayscale": lambda s, x: grayscale(x),
           "gaussian blur": lambda s, x: gaussian_blur(x, p["sigma"][s], cfg.kernel)}
    rows = []
    for name, fn in ops.items():
        seconds = _timed(lambda: [fn(s, x) for s, x in zip(parts, crops)], dev, repeats)
        rows.append({"what": f"  op: {name}", "data": f"{dev} block {block}", "clips_per_s": round(n / seconds, 1)})
    return rows


def format_table(results: dict) -> str:
    """A plain-text table of benchmark rows (what, data, clips/s, ratio)."""
    flops = any("achieved_tflops" in r for r in results["rows"])
    head = f"{'what':32s} {'data':16s} {'clips/s':>9s} {'ratio':>6s}"
    lines = [head + (f" {'TFLOP/s':>8s} {'of peak':>8s}" if flops else "")]
    for r in results["rows"]:
        line = f"{r['what']:32s} {r['data']:16s} {r['clips_per_s']:9.1f} {r.get('ratio', ''):>6}"
        if flops:
            frac = r.get("ceiling_fraction")
            line += f" {r['achieved_tflops']:8.3f} {'' if frac is None else f'{frac:.1%}':>8s}"
        lines.append(line)
    if any("phase_ms" in r for r in results["rows"]):  # bench train: where the step's time goes
        lines += ["", f"{'ms per step':32s} " + " ".join(f"{k:>9s}" for k in PHASES)]
        lines += [f"{r['what']:32s} " + " ".join(f"{r['phase_ms'][k]:9.1f}" for k in PHASES) for r in results["rows"]]
    return "\n".join(lines)


# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, without sparsity), to express a
# measured rate as a fraction of the ceiling. A GPU not listed gets no fraction.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0}


def peak_tflops(device: torch.device) -> float | None:
    """The bf16 peak of a CUDA device from ``PEAK_BF16_TFLOPS``, by name; None on the CPU or an unlisted GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def train_step_flops(method: torch.nn.Module, batch: dict) -> float:
    """FLOPs of one training step (forward and backward) of ``method`` on ``batch``, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss, _ = method(batch)
        loss.backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def train_benchmark(*, model: str = "r3d_18", method: str = "simclr", width: float = 1.0, clip_len: int = 16,
                    size: int = 112, batch: int = 8, device: str = "cpu", steps: int = 3, amp: bool = False,
                    channels_last: bool = False, compile: bool = False, seed: int = 0) -> dict:
    """Videos/s and clips/s of full training steps (augmentation, forward, loss, backward, SGD) of a method.

    The batch is uint8 clips already on ``device`` (two per video, frames ``crop_room(size)``
    square), so the number is the model's, without data loading; ``phase_ms`` splits the step
    into augmentation, forward, loss, backward and optimiser (``phases.py``; the data and
    transfer phases of a real run are in its training log). FLOPs per step are
    counted once by ``torch.utils.flop_counter`` (eager, fp32); ``achieved_tflops`` divides
    them by the measured step time and ``ceiling_fraction`` by the GPU's bf16 peak.
    """
    dev = torch.device(device)
    torch.manual_seed(seed)
    m = build_method(method, create_model(model, width=width), num_classes=8, num_videos=max(64, batch),
                     size=size).to(dev)
    clips_per_video = sampler_for(method, clip_len=clip_len)(10 * clip_len, np.random.default_rng(0)).shape[0]
    frame = crop_room(size)
    g = torch.Generator(device=dev).manual_seed(seed)
    data = {"clips": torch.randint(0, 256, (batch, clips_per_video, 3, clip_len, frame, frame), generator=g,
                                   dtype=torch.uint8, device=dev),
            "index": torch.arange(batch, device=dev), "label": torch.zeros(batch, dtype=torch.long, device=dev),
            "frames": torch.arange(clip_len, device=dev).repeat(batch, clips_per_video, 1)}
    flops = train_step_flops(m, data)
    if channels_last:
        use_channels_last(m)
    if compile:
        m.backbone.compile()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    use_amp = amp and dev.type in AUTOCAST
    clock = PhaseClock(dev).watch(m)

    def step():
        clock.mark("loss")  # the method's own code; its hooks mark augment and forward
        with autocast(dev, use_amp):
            loss, _ = m(data)
        clock.mark("backward")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clock.mark("optimizer")
        opt.step()
        clock.mark(None)

    step()  # a second warm-up (compilation, cuDNN autotuning) beyond _timed's own
    seconds = _timed(step, dev, steps, before=clock.reset)
    phases = phase_record(clock.read(), steps)
    clock.unwatch()
    achieved = flops / seconds / 1e12
    peak = peak_tflops(dev)
    return {"model": model, "width": width, "method": method, "clip_len": clip_len, "size": size, "batch": batch,
            "device": device_name(dev) if dev.type != "cpu" else "cpu",
            "threads": torch.get_num_threads(), "amp": use_amp, "channels_last": channels_last, "compile": compile,
            "step_s": round(seconds, 4), "videos_per_s": round(batch / seconds, 2),
            "clips_per_s": round(batch * clips_per_video / seconds, 2),
            "gflops_per_step": round(flops / 1e9, 4), "achieved_tflops": float(f"{achieved:.4g}"),
            "peak_tflops": peak, "ceiling_fraction": round(achieved / peak, 4) if peak else None,
            **phases}


def step_times(methods: list[str], trees: dict[str, str], *, data: str, rounds: int = 2, steps: int = 20,
               changes: dict | None = None, mode: str = "full", on_row=None) -> dict:
    """Milliseconds per training step of each method at the course budget, measured side by side.

    ``trees``: {label: folder holding a ``course_lib`` package} (an older commit's checkout, and this
    one). Each round runs every method once per tree, the trees alternating and their order flipped
    every round, so that slow drifts of the machine fall on both sides; every run is its own
    process. A row holds epoch 2's ms per step (``seconds / steps``) and, where the tree logs
    them, its phases. ``changes`` (TrainConfig fields) apply to every tree's runs; ``mode``
    names the course budget (``course.BUDGETS``) the runs take. ``on_row(rows)`` is called after every run
    (the command line writes the rows so far to ``--out``, so a run cut off keeps what it measured).
    """
    driver = (Path(__file__).parent / "step_driver.py").read_text(encoding="utf-8")  # run as -c: the tree's course_lib
    rows = []
    for r in range(rounds):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for name in methods:
            for label, tree in order:
                spec = {"method": name, "steps": steps, "data": data, "changes": changes or {}, "mode": mode}
                env = {**os.environ, "PYTHONPATH": str(tree)}
                with tempfile.TemporaryDirectory() as cwd:  # not the tree's parent: the tree alone on the path
                    proc = subprocess.run([sys.executable, "-c", driver, json.dumps(spec)], env=env, cwd=cwd,
                                          capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(f"bench steps: {name} in {tree} failed: {proc.stderr.strip().splitlines()[-1]}")
                record = json.loads(proc.stdout.strip().splitlines()[-1])
                if record.get("missing"):
                    continue
                rows.append({"method": name, "tree": label, "round": r + 1,
                             "ms_per_step": round(1000 * record["seconds"] / steps, 1), "loss": record.get("loss"),
                             **{k: record[k] for k in ("phase_ms", "phase_share") if k in record}})
                share = rows[-1].get("phase_share", {})
                print(f"bench steps: round {r + 1}, {name}, {label}: {rows[-1]['ms_per_step']} ms per step"
                      + "".join(f", {k} {v:.0%}" for k, v in share.items() if v >= 0.05), file=sys.stderr, flush=True)
                if on_row:
                    on_row(rows)
    summary = {}
    for name in methods:
        means = {label: float(np.mean([x["ms_per_step"] for x in rows if x["method"] == name and x["tree"] == label]))
                 for label in trees if any(x["method"] == name and x["tree"] == label for x in rows)}
        if means:
            summary[name] = {"ms_per_step": {k: round(v, 1) for k, v in means.items()}}
            if len(means) == 2:
                (a, ta), (b, tb) = means.items()
                summary[name][f"speedup_{b}_over_{a}"] = round(ta / tb, 3)
    return {"what": "steps", "rounds": rounds, "steps": steps, "data": data, "changes": changes or {}, "mode": mode,
            "trees": {k: str(v) for k, v in trees.items()}, "rows": rows, "summary": summary}


def format_steps(results: dict) -> str:
    """The side-by-side table of ``step_times`` and the phases of the last tree that logs them."""
    labels = list(results["trees"])
    lines = [f"{'method':12s} " + " ".join(f"{k[:14]:>14s}" for k in labels) + f" {'speed-up':>9s}"]
    for name, s in results["summary"].items():
        ms = s["ms_per_step"]
        up = next((v for k, v in s.items() if k.startswith("speedup")), None)
        lines.append(f"{name:12s} " + " ".join(f"{ms.get(k, float('nan')):14.1f}" for k in labels)
                     + (f" {up:8.2f}x" if up else ""))
    phased = [x for x in results["rows"] if "phase_ms" in x]
    if phased:
        lines += ["", f"{'ms per step':12s} " + " ".join(f"{k:>9s}" for k in PHASES)]
        for name in results["summary"]:
            mine = [x["phase_ms"] for x in phased if x["method"] == name]
            if mine:
                lines.append(f"{name:12s} " + " ".join(f"{np.mean([m[k] for m in mine]):9.1f}" for k in PHASES))
    return "\n".join(lines)
