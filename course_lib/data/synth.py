"""The built-in dataset: real H.264 videos of moving objects whose class is the motion.

Eight classes in four time-reversal pairs::

    move_left  <-> move_right     rotate_cw <-> rotate_ccw
    move_up    <-> move_down      grow      <-> shrink

Appearance (shape, colour, texture, background, size) and speed are drawn at random,
independently of the class, and recorded in the manifest's ``attrs``. The world wraps
around (an object leaving on the left comes back on the right), start positions,
angles and scales are uniform, so the distribution of a single frame is the same for
every class: only motion, read in the right temporal order, tells the classes apart.
That is the situation the course's papers target (IIC, CVRL, DualVar).

Everything is deterministic from the seed. ``python -m course_lib synth --out DIR``.
"""
from __future__ import annotations

import colorsys
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..runtime import default_workers
from ..video import write_video
from .manifest import Manifest, VideoEntry

CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink")
REVERSED = {"move_left": "move_right", "move_up": "move_down", "rotate_cw": "rotate_ccw", "grow": "shrink"}
REVERSED.update({v: k for k, v in REVERSED.items()})
SHAPES = ("square", "triangle", "star", "cross", "ellipse")
TEXTURES = ("solid", "stripes", "checker", "dots")
BACKGROUNDS = ("flat", "gradient", "noise", "grid")
COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
_HUES = (0.0, 0.08, 0.15, 0.33, 0.5, 0.62, 0.75, 0.9)  # centre hue of each colour name


@dataclass(frozen=True)
class SynthConfig:
    """Size of the generated dataset. ``PRESETS`` holds the default and quick sizes."""

    train_per_class: int = 60  # videos per class in the train split
    test_per_class: int = 15  # videos per class in the test split
    size: int = 128  # frame height and width in pixels
    min_frames: int = 64  # video length is uniform in [min_frames, max_frames]
    max_frames: int = 96
    fps: int = 25
    keyframe_interval: int = 16  # dense keyframes make seeking cheap
    crf: int = 20  # H.264 quality (lower is better)
    seed: int = 0


PRESETS = {
    "default": SynthConfig(),
    "quick": SynthConfig(train_per_class=16, test_per_class=6, size=64, min_frames=40, max_frames=56),
}


def sample_params(cfg: SynthConfig) -> list[dict]:
    """Draw class, split and appearance of every video (deterministic from cfg.seed)."""
    rng = np.random.default_rng(cfg.seed)
    params = []
    for c, label in enumerate(CLASSES):
        for j in range(cfg.train_per_class + cfg.test_per_class):
            color = int(rng.integers(len(COLORS)))
            params.append(
                dict(
                    label=label,
                    split="train" if j < cfg.train_per_class else "test",
                    name=f"{label}/{label}_{j:04d}.mp4",
                    num_frames=int(rng.integers(cfg.min_frames, cfg.max_frames + 1)),
                    shape=SHAPES[rng.integers(len(SHAPES))],
                    texture=TEXTURES[rng.integers(len(TEXTURES))],
                    background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
                    color=COLORS[color],
                    hue=float((_HUES[color] + rng.uniform(-0.03, 0.03)) % 1.0),
                    size=round(float(rng.uniform(0.12, 0.2)), 4),  # object radius / frame side
                    speed=round(float(rng.uniform(0.6, 1.4)), 4),  # multiplies the class's base speed
                    seed=int(rng.integers(2**31)),
                )
            )
    return params


def _background(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """A static (n, n, 3) float background in [0, 1], darker than any object."""
    hue = rng.uniform()
    base = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.5), rng.uniform(0.15, 0.35)))
    other = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1, rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.3)))
    y, x = np.mgrid[0:n, 0:n] / n
    if kind == "flat":
        w = np.zeros((n, n))
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        w = (np.cos(a) * (x - 0.5) + np.sin(a) * (y - 0.5)) + 0.5
    elif kind == "noise":  # smooth value noise: random grid, bilinear upsampling
        g = rng.uniform(size=(9, 9))
        gy, gx = y * 8, x * 8
        y0, x0 = gy.astype(int), gx.astype(int)
        fy, fx = gy - y0, gx - x0
        w = (g[y0, x0] * (1 - fy) * (1 - fx) + g[y0 + 1, x0] * fy * (1 - fx)
             + g[y0, x0 + 1] * (1 - fy) * fx + g[y0 + 1, x0 + 1] * fy * fx)
    else:  # grid
        period = rng.integers(8, 17) / 128
        w = (((x % period) < period / 6) | ((y % period) < period / 6)).astype(float)
    w = np.clip(w, 0, 1)[..., None]
    return base * (1 - w) + other * w


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in object coordinates (radius 1)."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.75
    if shape == "ellipse":
        return u**2 + (v / 0.55) ** 2 <= 1
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(u) <= 0.95) & (np.abs(v) <= 0.3))
    if shape == "triangle":  # equilateral, pointing up in object coordinates
        return (v >= -0.5) & (np.sqrt(3) * u - v <= 1) & (-np.sqrt(3) * u - v <= 1)
    # star: five points
    r, phi = np.hypot(u, v), np.arctan2(v, u)
    return r <= 0.45 + 0.55 * (0.5 + 0.5 * np.cos(5 * phi)) ** 3


def _texture(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Texture weight in [0, 1] in object coordinates (it moves and turns with the object)."""
    if kind == "solid":
        return np.zeros(u.shape, np.float32)
    if kind == "stripes":
        return (np.sin(u * 7) > 0).astype(np.float32)
    if kind == "checker":
        return ((np.sin(u * 6) * np.sin(v * 6)) > 0).astype(np.float32)
    return (((u * 2.5) % 1 - 0.5) ** 2 + ((v * 2.5) % 1 - 0.5) ** 2 < 0.08).astype(np.float32)  # dots


def render(p: dict, n: int) -> np.ndarray:
    """Frames of one video as uint8 (T, n, n, 3)."""
    rng = np.random.default_rng(p["seed"])
    t = np.arange(p["num_frames"], dtype=np.float32)[:, None, None]  # T x 1 x 1
    label, speed = p["label"], p["speed"]
    cx, cy = rng.uniform(0, n, size=2).astype(np.float32)  # start position, uniform over the (wrapping) frame
    angle0 = rng.uniform(0, 2 * np.pi)
    radius = p["size"] * n
    log_range = np.log(1.8)  # scales vary within [1/1.8, 1.8] around the base radius
    dx = dy = 0.0 * t
    angle = np.float32(angle0) + 0 * t
    log_scale = np.float32(rng.uniform(-log_range, log_range)) + 0 * t
    if label.startswith("move_"):
        step = speed * n / 64  # pixels per frame
        sign = -1 if label in ("move_left", "move_up") else 1
        if label in ("move_left", "move_right"):
            dx = sign * step * t
        else:
            dy = sign * step * t
    elif label.startswith("rotate_"):
        angle = angle0 + (1 if label == "rotate_ccw" else -1) * np.deg2rad(6 * speed) * t
    else:  # grow / shrink: log-scale moves linearly, the whole video stays within range
        rate = 0.012 * speed * (1 if label == "grow" else -1)
        span = abs(rate) * (p["num_frames"] - 1)
        lo = rng.uniform(-log_range, log_range - span) if span < 2 * log_range else -log_range
        log_scale = (lo + rate * t) if rate > 0 else (lo + span + rate * t)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    # offsets to the object centre on a torus, so objects wrap around the frame edges
    ox = (x[None] - (cx + dx) + n / 2) % n - n / 2  # T x n x n
    oy = (y[None] - (cy + dy) + n / 2) % n - n / 2
    scale = (radius * np.exp(log_scale)).astype(np.float32)
    angle = angle.astype(np.float32)
    # rotate into object coordinates; image y points down, so +angle turns anticlockwise on screen
    u = (np.cos(angle) * ox - np.sin(angle) * oy) / scale
    v = (np.sin(angle) * ox + np.cos(angle) * oy) / scale
    v = -v  # object "up" is screen up
    mask = _shape_mask(p["shape"], u, v)[..., None]
    color = np.array(colorsys.hsv_to_rgb(p["hue"], rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)))
    tex = _texture(p["texture"], u, v)[..., None]
    obj = (color * 255).astype(np.float32) * (1 - 0.45 * tex)
    bg = (_background(p["background"], n, rng) * 255).astype(np.float32)
    return (np.where(mask, obj, bg[None]) + 0.5).astype(np.uint8)


def _make_one(args) -> None:
    p, cfg, out = args
    write_video(out / "videos" / p["name"], render(p, cfg.size), fps=cfg.fps,
                keyframe_interval=cfg.keyframe_interval, crf=cfg.crf, threads=1)


def generate(out: str | os.PathLike, cfg: SynthConfig = PRESETS["default"], *, workers: int | None = None,
             progress: bool = True) -> Manifest:
    """Write the videos and ``manifest.jsonl`` under ``out``; return the manifest."""
    from tqdm.auto import tqdm

    out = Path(out)
    t0 = time.perf_counter()
    params = sample_params(cfg)
    workers = workers or default_workers()
    jobs = [(p, cfg, out) for p in params]
    chunks = max(1, len(jobs) // (workers * 8))
    if workers == 1:
        for job in tqdm(jobs, desc="synth", disable=not progress):
            _make_one(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(tqdm(pool.map(_make_one, jobs, chunksize=chunks), total=len(jobs), desc="synth",
                      disable=not progress))
    appearance = ("shape", "texture", "background", "color", "size", "speed")
    entries = [
        VideoEntry(path=f"videos/{p['name']}", label=p["label"], split=p["split"], num_frames=p["num_frames"],
                   fps=float(cfg.fps), attrs={k: p[k] for k in appearance})
        for p in params
    ]
    manifest = Manifest(root=out, classes=list(CLASSES), entries=entries)
    manifest.save(out / "manifest.jsonl")
    seconds = time.perf_counter() - t0
    info = {"config": asdict(cfg), "videos": len(entries), "seconds": round(seconds, 2), "workers": workers}
    (out / "synth.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return manifest


def ensure(out: str | os.PathLike | None = None, *, quick: bool | None = None, cfg: SynthConfig | None = None,
           progress: bool = True) -> Manifest:
    """Load the built-in dataset, generating it first if it is missing or was made with other settings.

    With no arguments it lives under ``data/synth`` (or ``data/synth-quick`` in quick
    mode) of the course repository.
    """
    from ..runtime import data_dir, quick_mode

    quick = quick_mode() if quick is None else quick
    cfg = cfg or PRESETS["quick" if quick else "default"]
    out = Path(out) if out else data_dir() / ("synth-quick" if quick else "synth")
    stamp = out / "synth.json"
    if stamp.exists() and (out / "manifest.jsonl").exists():
        try:
            same = json.loads(stamp.read_text(encoding="utf-8"))["config"] == asdict(cfg)
        except (json.JSONDecodeError, KeyError):
            same = False
        if same:
            manifest = Manifest.load(out / "manifest.jsonl")
            if all(manifest.path(e).exists() for e in manifest):
                return manifest
    return generate(out, cfg, progress=progress)
