"""Dataset preparation: re-encode a video dataset for fast clip decoding and write its manifest.

``python -m course_lib prepare {folder,ucf101,hmdb51,kinetics} --src DIR --out DIR``

Every video is decoded once and written again as H.264 in MP4 with

- the short side scaled to ``short_side`` (default 128; 112 x 112 crops are taken from it,
  as in IIC, CVRL and DualVar's data pipelines), the aspect ratio kept, sizes even;
- a keyframe every ``keyframe_interval`` frames (default 16), so that seeking to any clip
  decodes at most 15 frames it does not need (notebook 01 measures the seek cost);
- the source's frame timing (a variable-frame-rate video stays VFR), no audio.

Workers are processes. A re-run skips outputs that already exist and probe fine, so an
interrupted preparation resumes; outputs are written to a temporary name and renamed.
A video that cannot be read is logged to ``prepare_errors.jsonl`` in ``out`` and counted,
never fatal; so is a video that a split file lists but that is missing. The manifest
(``out/manifest.jsonl``) holds the videos that were prepared, with their splits: the
official split files for UCF101 (``ucfTrainTestlist/``) and HMDB51
(``testTrainMulti_7030_splits/``), the annotation CSVs for Kinetics, and a deterministic
stratified split for a plain folder of class folders (``manifest.read_folder``).
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType

from ..runtime import default_workers, worker_pool
from ..video import VideoError, _reason, probe
from .manifest import (Manifest, ManifestError, MissingVideosWarning, read_folder, read_hmdb51, read_kinetics,
                       read_ucf101)

LAYOUTS = ("folder", "ucf101", "hmdb51", "kinetics")
ERRORS = "prepare_errors.jsonl"
SUMMARY = "prepare.json"
# where the official split files are looked for when --splits is not given
DEFAULT_SPLITS = {"ucf101": "ucfTrainTestlist", "hmdb51": "testTrainMulti_7030_splits", "kinetics": "annotations"}
KINETICS_CSVS = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}


@dataclass(frozen=True)
class EncodeSettings:
    short_side: int = 128
    keyframe_interval: int = 16
    crf: int = 23
    preset: str = "veryfast"


def even_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at ``short_side`` (never upscaled), aspect kept, both even."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def reencode(src: str | os.PathLike, dst: str | os.PathLike, settings: EncodeSettings = EncodeSettings()) -> Path:
    """Decode ``src`` and write it to ``dst`` (MP4, H.264, short side and keyframes as ``settings``).

    Raises ``VideoError`` naming ``src`` when it cannot be decoded. The frames keep their
    presentation times; the output is written under a temporary name, then renamed.
    """
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.mp4")
    frames = 0
    try:
        with av.open(str(src)) as inp:
            if not inp.streams.video:
                raise VideoError(f"{src}: has no video stream.")
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            rate = vin.average_rate or vin.guessed_rate or Fraction(25)
            width, height = even_size(vin.codec_context.width, vin.codec_context.height, settings.short_side)
            opts = {"g": str(settings.keyframe_interval), "keyint_min": str(settings.keyframe_interval),
                    "sc_threshold": "0", "crf": str(settings.crf), "preset": settings.preset}
            with av.open(str(tmp), mode="w", format="mp4") as out:
                vout = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001), options=opts)
                vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
                tb = vin.time_base or Fraction(1, 1000)
                vout.codec_context.time_base = tb
                vout.time_base = tb
                first = last = None
                for frame in inp.decode(vin):
                    pts = frame.pts if frame.pts is not None else (last + 1 if last is not None else 0)
                    first = pts if first is None else first
                    if last is not None and pts - first <= last:  # repeated or backwards timestamps
                        pts = first + last + 1
                    last = pts - first
                    small = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                    small.pts, small.time_base = last, tb
                    small.pict_type = PictureType.NONE  # the source's I-frames would force keyframes of their own
                    for packet in vout.encode(small):
                        out.mux(packet)
                    frames += 1
                for packet in vout.encode():
                    out.mux(packet)
        if frames == 0:
            raise VideoError(f"{src}: has no decodable frames.")
        os.replace(tmp, dst)
        return dst
    except av.error.FFmpegError as e:
        raise VideoError(f"{src}: cannot be decoded ({_reason(e)}).") from None
    finally:
        tmp.unlink(missing_ok=True)


def _job(args) -> dict:
    """One video, in a worker process: skip if already done, else re-encode; never raises."""
    src, dst, settings = args
    t0 = time.perf_counter()
    if dst.exists():
        try:
            info = probe(dst)
            return {"status": "skipped", "dst": str(dst), "num_frames": info.num_frames, "fps": info.fps,
                    "vfr": not info.constant_frame_rate}
        except VideoError:
            dst.unlink()  # a broken output from an earlier run: make it again
    try:
        probe(src)  # a clear reason for a missing, truncated or undecodable source
        reencode(src, dst, settings)
        info = probe(dst)
    except (VideoError, OSError, ValueError) as e:
        return {"status": "failed", "src": str(src), "error": str(e)}
    return {"status": "encoded", "dst": str(dst), "num_frames": info.num_frames, "fps": info.fps,
            "vfr": not info.constant_frame_rate, "seconds": round(time.perf_counter() - t0, 3)}


def source_manifest(layout: str, src: str | os.PathLike, *, splits: str | os.PathLike | None = None,
                    fold: int = 1, test_fraction: float = 0.2, seed: int = 0) -> tuple[Manifest, int]:
    """The videos of ``src`` and their splits, read the way ``layout`` lays them out, and how many
    videos the split files list that are missing."""
    src = Path(src)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}.")
    if not src.is_dir():
        raise ManifestError(f"{src}: source folder not found.")
    if layout == "folder":
        return read_folder(src, test_fraction=test_fraction, seed=seed), 0
    split_dir = Path(splits) if splits else src / DEFAULT_SPLITS[layout]
    if not split_dir.is_dir():
        raise ManifestError(f"{split_dir}: split folder not found; give it with --splits.")
    with warnings.catch_warnings(record=True) as caught:  # missing videos: counted here, not printed
        warnings.simplefilter("always", MissingVideosWarning)
        if layout == "ucf101":
            manifest = read_ucf101(src, split_dir, fold=fold, missing="skip")
        elif layout == "hmdb51":
            manifest = read_hmdb51(src, split_dir, fold=fold, missing="skip")
        else:
            csvs = {split: split_dir / name for split, name in KINETICS_CSVS.items() if (split_dir / name).exists()}
            if not csvs:
                raise ManifestError(f"{split_dir}: no Kinetics annotation CSV ({', '.join(KINETICS_CSVS.values())}).")
            manifest = read_kinetics(src, csvs, missing="skip")
    for w in caught:  # anything else is shown as usual
        if not isinstance(w.message, MissingVideosWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return manifest, sum(len(w.message.paths) for w in caught if isinstance(w.message, MissingVideosWarning))


def prepare(layout: str, src: str | os.PathLike, out: str | os.PathLike, *, settings: EncodeSettings = EncodeSettings(),
            workers: int | None = None, splits: str | os.PathLike | None = None, fold: int = 1,
            test_fraction: float = 0.2, seed: int = 0, progress: bool = True) -> dict:
    """Re-encode the dataset at ``src`` into ``out`` and write ``out/manifest.jsonl``; return a summary.

    The summary counts videos encoded, skipped (already prepared), failed (logged in
    ``prepare_errors.jsonl``) and missing (listed by a split file, not found).
    """
    from tqdm.auto import tqdm

    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise ValueError(f"{out}: --out must differ from --src (the videos would be overwritten).")
    source, missing = source_manifest(layout, src, splits=splits, fold=fold, test_fraction=test_fraction, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(source.path(e), out / Path(e.path).with_suffix(".mp4"), settings) for e in source]
    if len({dst for _, dst, _ in jobs}) < len(jobs):
        raise ManifestError(f"{src}: two videos differ only in their extension; their outputs would collide.")
    workers = workers or default_workers()
    bar = tqdm(total=len(jobs), desc=f"prepare {layout}", unit="video", disable=not progress)
    results = []
    if workers == 1:
        for job in jobs:
            results.append(_job(job))
            bar.update(1)
    else:
        with worker_pool(workers, preload=(__name__,)) as pool:
            for r in pool.map(_job, jobs, chunksize=max(1, min(16, len(jobs) // (workers * 8)))):
                results.append(r)
                bar.update(1)
    bar.close()
    entries, failed = [], []
    for e, r in zip(source, results):
        if r["status"] == "failed":
            failed.append({"path": e.path, "label": e.label, "split": e.split, "error": r["error"]})
            continue
        attrs = {**e.attrs, **({"vfr": True} if r["vfr"] else {})}
        entries.append(replace(e, path=Path(e.path).with_suffix(".mp4").as_posix(), num_frames=r["num_frames"],
                               fps=r["fps"], attrs=attrs))
    with open(out / ERRORS, "w", encoding="utf-8") as f:
        for item in failed:
            f.write(json.dumps(item) + "\n")
    if not entries:
        raise VideoError(f"{src}: none of the {len(jobs)} videos could be prepared; see {out / ERRORS}.")
    classes = [c for c in source.classes if any(e.label == c for e in entries)]
    manifest = Manifest(root=out, classes=classes, entries=entries)
    manifest.save(out / "manifest.jsonl")
    count = {s: sum(r["status"] == s for r in results) for s in ("encoded", "skipped", "failed")}
    summary = {"layout": layout, "src": str(src), "out": str(out), "videos": len(entries), **count,
               "missing": missing,
               "classes": len(classes), "splits": {s: sum(e.split == s for e in entries) for s in
                                                    sorted({e.split for e in entries})},
               "settings": {"short_side": settings.short_side, "keyframe_interval": settings.keyframe_interval,
                            "crf": settings.crf, "preset": settings.preset},
               "workers": workers, "seconds": round(time.perf_counter() - t0, 2)}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
