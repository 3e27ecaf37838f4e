"""The built-in dataset: real H.264 videos of moving objects whose class is the motion.

Eight classes in four time-reversal pairs::

    move_left  <-> move_right     rotate_cw <-> rotate_ccw
    move_up    <-> move_down      grow      <-> shrink

A horizontal flip turns move_left into move_right and rotate_cw into rotate_ccw (``MIRRORED``),
so, unlike on UCF101 or Kinetics, a flip is not a label-preserving augmentation here.

Appearance (shape, colour, texture, background, size) and speed are drawn at random,
independently of the class, and recorded in the manifest's ``attrs``. The world wraps
around (an object leaving on the left comes back on the right), start positions,
angles and scales are uniform, so the distribution of a single frame is the same for
every class: only motion, read in the right temporal order, tells the classes apart.
That is the situation the course's papers target (IIC, CVRL, DualVar).

Real benchmarks lean the other way: in UCF101 the scene often gives the action away.
``static_bias=P`` makes the same data's twin that does: each appearance attribute of
``BIASED`` (background, shape, colour) takes its class's preferred value (``PREFERRED``)
with probability ``TYPICAL`` x P, else stays as drawn. P = 0 is the data above, video for
video. At P = 1 most videos look typical of their class (the colour names the class, the
background its time-reversal pair) and some do not, as a few UCF101 divers are not at a pool.
``attribute_table`` measures how much each attribute tells about the class.

Everything is deterministic from the seed. ``python -m course_lib synth --out DIR``.
"""
from __future__ import annotations

import colorsys
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..runtime import data_dir, default_workers, worker_pool
from ..video import write_video
from .manifest import Manifest, VideoEntry

CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink")
REVERSED = {"move_left": "move_right", "move_up": "move_down", "rotate_cw": "rotate_ccw", "grow": "shrink"}
REVERSED.update({v: k for k, v in REVERSED.items()})
# the classes a horizontal flip turns into each other: mirrored, a move_left clip moves right
MIRRORED = {"move_left": "move_right", "rotate_cw": "rotate_ccw"}
MIRRORED.update({v: k for k, v in MIRRORED.items()})
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
    static_bias: float = 0.0  # each BIASED attribute takes its class's preferred value with probability TYPICAL x this

    def __post_init__(self):
        if not 0 <= self.static_bias <= 1:
            raise ValueError(f"static_bias must be between 0 and 1, not {self.static_bias}.")


PRESETS = {
    "default": SynthConfig(),
    "quick": SynthConfig(train_per_class=16, test_per_class=6, size=64, min_frames=40, max_frames=56),
}


# the static-bias twin: each class's preferred appearance. The colour is the class's own; the background is
# shared by a time-reversal pair (CLASSES lists the pairs side by side), as a scene is shared by related actions.
BIASED = ("background", "shape", "color")
TYPICAL = 0.85  # at static_bias 1, the share of videos whose attribute takes the class's value
PREFERRED = {label: {"background": BACKGROUNDS[c // 2], "shape": SHAPES[c % len(SHAPES)], "color": COLORS[c]}
             for c, label in enumerate(CLASSES)}


def sample_params(cfg: SynthConfig) -> list[dict]:
    """Draw class, split and appearance of every video (deterministic from cfg.seed); then, for the static-bias
    twin, replace each BIASED attribute by its class's preferred value with probability TYPICAL x cfg.static_bias."""
    params = _unbiased_params(cfg)
    # a random stream of its own, so that P = 0 leaves every video as it was
    draws = np.random.default_rng([cfg.seed, 1]).uniform(size=(len(params), len(BIASED)))
    for p, row in zip(params, draws):
        for attr, u in zip(BIASED, row):
            if u < TYPICAL * cfg.static_bias:
                if attr == "color":  # the same hue offset around the new colour's centre
                    old, new = COLORS.index(p["color"]), COLORS.index(PREFERRED[p["label"]]["color"])
                    p["hue"] = float((p["hue"] - _HUES[old] + _HUES[new]) % 1.0)
                p[attr] = PREFERRED[p["label"]][attr]
    return params


def _unbiased_params(cfg: SynthConfig) -> list[dict]:
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


CATEGORICAL = ("background", "shape", "color", "texture")  # the recorded appearance attributes with named values


def attribute_table(videos, attrs: tuple[str, ...] = CATEGORICAL) -> dict[str, dict]:
    """How much each appearance attribute tells about the class, per attribute:

    - ``vote``: accuracy (%) on the test split of naming a video's class as the most common class among
      the train videos with the same value (chance: 100 / classes);
    - ``cramers_v``: Cramer's V of the attribute-by-class table over all videos, bias-corrected (Bergsma,
      J. Korean Stat. Soc. 2013) so that independence reads about 0 at any sample size; 1 when one fixes the
      other. Uncorrected, sqrt(chi2 / (n (k - 1))) with k the smaller number of categories.

    ``videos``: a Manifest (or its entries) or ``sample_params``' dicts, which need no rendering.
    """
    rows = [(v["label"], v["split"], v) if isinstance(v, dict) else (v.label, v.split, v.attrs) for v in videos]
    classes = sorted({label for label, _, _ in rows})
    table = {}
    for attr in attrs:
        values = sorted({a[attr] for _, _, a in rows})
        counts = np.zeros((len(values), len(classes)))  # value x class, all videos
        train = np.zeros_like(counts)
        for label, split, a in rows:
            i, j = values.index(a[attr]), classes.index(label)
            counts[i, j] += 1
            train[i, j] += split == "train"
        guess = train.argmax(1)  # each value's most common class among train videos
        test = [(values.index(a[attr]), classes.index(label)) for label, split, a in rows if split == "test"]
        vote = 100 * np.mean([guess[i] == j for i, j in test])
        n, (r, c) = counts.sum(), counts.shape
        expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / n
        phi2 = ((counts - expected) ** 2 / expected).sum() / n  # chi2 / n
        phi2 = max(0.0, phi2 - (r - 1) * (c - 1) / (n - 1))  # minus its expectation under independence
        r, c = r - (r - 1) ** 2 / (n - 1), c - (c - 1) ** 2 / (n - 1)
        v = np.sqrt(phi2 / (min(r, c) - 1)) if min(r, c) > 1 else 0.0
        table[attr] = {"vote": float(vote), "cramers_v": float(v)}
    return table


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
        with worker_pool(workers, preload=(__name__,)) as pool:
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
           static_bias: float = 0.0, progress: bool = True) -> Manifest:
    """Load the built-in dataset, generating it first if it is missing or was made with other settings.

    With no arguments it lives under ``data/synth`` (or ``data/synth-quick``, the small preset,
    where the mode's ``machine.DATA_PRESET`` says so) of the course repository; its static-bias
    twin (``static_bias=P``, unless ``cfg`` is given) under ``data/synth-biasP`` (``data/synth-quick-biasP``).
    """
    from ..machine import course_mode, small_data  # here, not above: machine imports the methods, which import this package

    quick = small_data(course_mode().name) if quick is None else quick
    cfg = cfg or replace(PRESETS["quick" if quick else "default"], static_bias=static_bias)
    name = ("synth-quick" if quick else "synth") + (f"-bias{cfg.static_bias:g}" if cfg.static_bias else "")
    out = Path(out) if out else data_dir() / name
    stamp = out / "synth.json"
    if stamp.exists() and (out / "manifest.jsonl").exists():
        try:  # a setting added since the data was made counts at its default
            same = {**asdict(SynthConfig()), **json.loads(stamp.read_text(encoding="utf-8"))["config"]} == asdict(cfg)
        except (json.JSONDecodeError, KeyError, TypeError):
            same = False
        if same:
            manifest = Manifest.load(out / "manifest.jsonl")
            if all(manifest.path(e).exists() for e in manifest):
                return manifest
    return generate(out, cfg, progress=progress)
