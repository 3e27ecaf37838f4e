"""Video decoding with PyAV: probe a file, decode chosen frames, write test videos.

Layout: every decoder here returns ``numpy.uint8`` arrays shaped ``(T, H, W, 3)``
(frames, height, width, RGB). The dataset turns them into torch ``(C, T, H, W)``.

Frame indices are positions in presentation order (0 = first frame shown), for
constant and variable frame rate alike. ``decode_frames`` seeks to the keyframe at or
before the first wanted frame and decodes forward only as far as the last one; it
never decodes a whole file to fetch a short clip. Resizing happens inside FFmpeg's
scaler (swscale) while converting to RGB, so full-size RGB frames are never built.
"""
from __future__ import annotations

import gc
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = [
    "VideoError",
    "VideoInfo",
    "probe",
    "frame_timestamps",
    "decode_frames",
    "decode_clips",
    "decode_from_start",
    "write_video",
    "output_size",
]

# Re-seek instead of decoding forward when the next wanted frame is this far ahead.
SEEK_GAP = 64


class VideoError(Exception):
    """A video file cannot be used; the message is one sentence naming the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video file (the first video stream)."""

    path: str
    num_frames: int  # frames in presentation order, counted from the packets
    fps: float  # average frame rate
    duration: float  # seconds
    width: int
    height: int
    codec: str
    pix_fmt: str | None
    keyframe_interval: int | None  # median frames between keyframes (None: one keyframe)
    constant_frame_rate: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _open(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and return (container, first video stream), or raise VideoError."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: file not found.")
    if p.is_dir():
        raise VideoError(f"{p}: is a directory, not a video file.")
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"{p}: not a readable video file ({_reason(e)}).") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: has no video stream.")
    stream = container.streams.video[0]
    # Single-threaded unless a caller asks for more: at the course's frame sizes threads
    # cost more than they save, and an FFmpeg context (decoder or swscale) that owns a
    # thread pool deadlocks when it is garbage-collected in a forked DataLoader worker.
    stream.codec_context.thread_count = 1
    return container, stream


def before_fork(num_workers: int) -> None:
    """Free this process's cyclic garbage before DataLoader workers fork from it.

    A decoder a learner opened with FFmpeg's default threads and left in a reference cycle
    would otherwise be freed by whichever process collects it first; in a forked worker
    its thread pool is gone and the free deadlocks (see ``_open``).
    """
    if num_workers > 0:
        gc.collect()


def _reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return msg.split(";")[0].strip().rstrip(".")


def _fps(stream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def _scan(path) -> tuple[np.ndarray, np.ndarray, int]:
    """Demux every packet once: sorted pts, keyframe indices, and the byte where data ends."""
    container, stream = _open(path)
    try:
        entries, end = [], 0
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end of the stream
                continue
            if packet.pos is not None and packet.pos >= 0:
                end = max(end, packet.pos + packet.size)
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is not None:
                entries.append((ts, packet.is_keyframe))
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: truncated or corrupt video ({_reason(e)}).") from None
    finally:
        container.close()
    entries.sort()
    pts = np.array([t for t, _ in entries], dtype=np.int64)
    keys = np.array([i for i, (_, k) in enumerate(entries) if k], dtype=np.int64)
    return pts, keys, end


def frame_timestamps(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Presentation timestamps of every frame, sorted, and the indices of keyframes.

    Reads packets only (demuxing, no decoding), so it costs one pass over the file's
    bytes. Use the timestamps with ``decode_frames(..., timestamps=...)`` for
    variable-frame-rate videos.
    """
    pts, keys, _ = _scan(path)
    return pts, keys


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a video file: frame count, fps, size, codec, keyframe interval.

    The frame count comes from the packets (exact, also where the container stores no
    count, as in WebM/MKV), and the first frame is decoded to prove the stream is
    decodable. Raises ``VideoError`` naming the file for a missing file, a file that is
    not a video, no video stream, a truncated file, or zero decodable frames.
    """
    pts, keys, end = _scan(path)
    size = Path(path).stat().st_size
    if end > size:
        raise VideoError(f"{path}: truncated video (its packets end at byte {end}, the file has {size}).")
    container, stream = _open(path)
    try:
        if len(pts) == 0:
            raise VideoError(f"{path}: has no decodable frames (the video stream is empty).")
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: has no decodable frames ({_reason(e)}).") from None
        if first is None:
            raise VideoError(f"{path}: has no decodable frames.")
        tb = stream.time_base
        fps = _fps(stream)
        diffs = np.diff(pts)
        if fps is None:  # no rate in the header: use the median frame duration
            fps = 1 / (Fraction(float(np.median(diffs))) * tb) if len(diffs) else Fraction(1)
        step = float(1 / (fps * tb))  # nominal frame duration in time-base ticks
        declared = container.duration / av.time_base if container.duration else None
        covered = float((pts[-1] - pts[0]) * tb) + 1 / float(fps)
        if declared and declared - covered > max(3 / float(fps), 0.05 * declared):
            raise VideoError(
                f"{path}: truncated video (its header says {declared:.2f} s, "
                f"its packets cover {covered:.2f} s)."
            )
        cfr = bool(len(diffs) == 0 or np.all(np.abs(diffs - step) <= max(1.0, 0.02 * step)))
        return VideoInfo(
            path=str(path),
            num_frames=int(len(pts)),
            fps=round(float(fps), 6),
            duration=round(len(pts) / float(fps), 6),
            width=first.width,
            height=first.height,
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            keyframe_interval=int(np.median(np.diff(keys))) if len(keys) > 1 else None,
            constant_frame_rate=cfr,
        )
    finally:
        container.close()


def _set_threads(stream, threads: int) -> None:
    if threads != 1:
        stream.thread_type = "AUTO"  # frame and slice threads
        stream.codec_context.thread_count = threads


def _rgb(reformatter: VideoReformatter, frame, width: int, height: int, interpolation: str) -> np.ndarray:
    """Colour-convert and resize in one swscale call, single-threaded (see ``_open``)."""
    return reformatter.reformat(frame, format="rgb24", width=width, height=height, interpolation=interpolation,
                                threads=1).to_ndarray()


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``short_side``, keeping aspect."""
    if short_side is None:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def decode_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray,
    *,
    short_side: int | None = None,
    size: tuple[int, int] | None = None,
    timestamps: np.ndarray | None = None,
    threads: int = 1,
    interpolation: str = "AREA",
    stats: dict | None = None,
) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3).

    Args:
        path: video file.
        indices: frame positions in presentation order.
        short_side: scale so the shorter side has this many pixels (aspect kept).
        size: (height, width) to scale to exactly; overrides ``short_side``.
        timestamps: sorted frame pts from ``frame_timestamps``; needed for exact indices
            in variable-frame-rate videos. Without it the frame rate is taken as constant.
        threads: decoder threads (frame and slice threading when not 1). The default, 1, is
            right for clips: measured on 2 cores for a 16-frame clip scaled to 128 px,
            threads=0 (FFmpeg chooses) took 3.2 vs 2.0 ms at 128x128, the same at 320x240
            and 640x360, and 19.7 vs 23.1 ms at 1280x720. Parallelism comes from
            DataLoader worker processes instead; a decoder with a thread pool must not be
            left as garbage in a process that later forks workers (see ``_open``).
        interpolation: swscale filter ("AREA", "BILINEAR", "BICUBIC", ...).
        stats: if given, filled with ``decoded`` (frames decoded) and ``seeks``.

    The decoder seeks to the keyframe at or before the first wanted frame, decodes
    forward, and seeks again across gaps larger than ``SEEK_GAP`` frames.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("decode_frames needs at least one frame index.")
    if idx.min() < 0:
        raise VideoError(f"{path}: frame index {int(idx.min())} is negative.")
    if timestamps is not None and idx.max() >= len(timestamps):
        raise VideoError(
            f"{path}: asked for frame {int(idx.max())} but the video has {len(timestamps)} frames."
        )
    container, stream = _open(path)
    try:
        return _decode(container, stream, path, idx, short_side, size, timestamps, threads, interpolation, stats)
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed ({_reason(e)}).") from None
    finally:
        container.close()


def _decode(container, stream, path, idx, short_side, size, timestamps, threads, interpolation, stats):
    _set_threads(stream, threads)
    tb = stream.time_base
    start = stream.start_time or 0
    fps = _fps(stream)
    if timestamps is None and fps is None:
        raise VideoError(f"{path}: the stream has no frame rate; pass timestamps=frame_timestamps(path)[0].")

    def to_index(frame, previous: int) -> int:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            return previous + 1
        if timestamps is not None:
            i = int(np.searchsorted(timestamps, pts))
            if i == len(timestamps) or (i > 0 and pts - timestamps[i - 1] < timestamps[i] - pts):
                i -= 1  # nearest
            return i
        return round((pts - start) * tb * fps)

    def to_pts(i: int) -> int:
        if timestamps is not None:
            return int(timestamps[i])
        return start + round(i / (fps * tb))

    reformatter = VideoReformatter()  # one swscale context for every frame of this call
    wanted = np.unique(idx)  # sorted
    where = {int(w): np.nonzero(idx == w)[0] for w in wanted}
    out = None
    k = 0  # next position in `wanted`
    current = -1  # index of the last decoded frame
    retried_from_start = False
    counts = stats if stats is not None else {}
    counts.update(decoded=0, seeks=0)

    def seek(i: int):
        counts["seeks"] += 1
        container.seek(max(to_pts(i), start), stream=stream, backward=True, any_frame=False)
        return container.decode(stream)

    frames = seek(int(wanted[0]))
    first_after_seek = True
    gap_seeks = True  # seek across large gaps, until one such seek lands behind us
    while k < len(wanted):
        target = int(wanted[k])
        if gap_seeks and not first_after_seek and target - current > SEEK_GAP:
            frames, first_after_seek = seek(target), True
        frame = next(frames, None)
        if frame is None:
            raise VideoError(f"{path}: asked for frame {int(wanted[-1])} but decoding ended after {current + 1} frames.")
        counts["decoded"] += 1
        i = to_index(frame, current)
        if first_after_seek:
            first_after_seek = False
            if i > target:  # the seek landed after the wanted frame (broken index): start over from the top
                if retried_from_start:
                    raise VideoError(f"{path}: cannot seek to frame {target} (broken index).")
                retried_from_start = True
                counts["seeks"] += 1
                container.seek(start, stream=stream, backward=True, any_frame=False)
                frames, current = container.decode(stream), -1
                continue
            if i <= current:  # sparse keyframes: the gap seek went backwards, so stop seeking over gaps
                gap_seeks = False
        current = i
        if i < target:
            continue
        if out is None:
            h, w = size if size is not None else output_size(frame.width, frame.height, short_side)[::-1]
            out = np.empty((len(idx), h, w, 3), dtype=np.uint8)
        rgb = _rgb(reformatter, frame, out.shape[2], out.shape[1], interpolation)
        # wanted[k] < i only when the stream has no frame at that index (VFR without timestamps): use this one
        while k < len(wanted) and int(wanted[k]) <= i:
            out[where[int(wanted[k])]] = rgb
            k += 1
    return out


def decode_clips(path: str | os.PathLike, clips: np.ndarray, **kwargs) -> np.ndarray:
    """Decode several clips of one video in one pass: (S, T) indices -> uint8 (S, T, H, W, 3).

    The union of all frames is decoded once, in order, so overlapping or nearby clips
    (two CVRL views, three VCOP clips) cost little more than one.
    """
    clips = np.asarray(clips, dtype=np.int64)
    s, t = clips.shape
    frames = decode_frames(path, clips.reshape(-1), **kwargs)  # (S*T, H, W, 3)
    return frames.reshape(s, t, *frames.shape[1:])


def decode_from_start(path: str | os.PathLike, indices: Sequence[int] | np.ndarray, *,
                      short_side: int | None = None, threads: int = 1) -> np.ndarray:
    """The naive reference: decode every frame from the first one, keep the wanted ones.

    Same output as ``decode_frames`` (uint8 (T, H, W, 3), frame ``i`` is the ``i``-th
    frame decoded), with no seeking and no timestamp arithmetic. It is the baseline that
    seeking is measured against, and an independent check of ``decode_frames``.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    container, stream = _open(path)
    _set_threads(stream, threads)
    out, reformatter = None, VideoReformatter()
    try:
        last = int(idx.max())
        for i, frame in enumerate(container.decode(stream)):
            if out is None:
                w, h = output_size(frame.width, frame.height, short_side)
                out = np.empty((len(idx), h, w, 3), dtype=np.uint8)
            hits = np.nonzero(idx == i)[0]
            if len(hits):
                out[hits] = _rgb(reformatter, frame, w, h, "AREA")
            if i == last:
                return out
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed ({_reason(e)}).") from None
    finally:
        container.close()
    raise VideoError(f"{path}: asked for frame {last} but the video ended earlier.")


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    fps: float = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    keyframe_interval: int | None = 16,
    crf: int | None = 18,
    timestamps_ms: Sequence[int] | None = None,
    threads: int = 1,
    options: dict | None = None,
) -> Path:
    """Encode uint8 frames (T, H, W, 3) or grayscale (T, H, W) to a video file.

    ``timestamps_ms`` writes a variable-frame-rate stream with these presentation
    times. The file is written to a temporary name and renamed, so a crash never
    leaves a half-written video under ``path``.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError("write_video needs uint8 frames shaped (T, H, W, 3) or (T, H, W).")
    opts = {}
    if keyframe_interval:
        opts["g"] = str(keyframe_interval)
        if codec in ("libx264", "libx264rgb"):
            opts["keyint_min"] = str(keyframe_interval)
            opts["sc_threshold"] = "0"
    if crf is not None and codec in ("libx264", "libx264rgb", "libvpx-vp9"):
        opts["crf"] = str(crf)
        if codec == "libvpx-vp9":
            opts["b"] = "0"
    if codec == "libx264":
        opts["preset"] = "veryfast"
        # x264's macroblock-tree rate control gave different pixels for the same input in
        # freshly forked processes (measured here); without it encoding is reproducible.
        opts["x264-params"] = "mbtree=0"
    opts.update(options or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # unique per writing process
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=opts)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = threads
        tb = None
        if timestamps_ms is not None:
            tb = Fraction(1, 1000)
            stream.codec_context.time_base = tb
            stream.time_base = tb
        fmt = "rgb24" if frames.ndim == 4 else "gray"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=fmt)
            if fmt != pix_fmt:
                # Convert here, into a frame of its own: the encoder keeps frames for look-ahead,
                # and both its implicit conversion and a reused VideoReformatter (which recycles
                # its output buffer) made the same input encode differently from run to run.
                frame = frame.reformat(format=pix_fmt, threads=1)
            if tb is not None:
                frame.pts, frame.time_base = int(timestamps_ms[i]), tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
