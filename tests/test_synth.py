"""The built-in dataset: motion defines the class, appearance is independent of it."""
from dataclasses import replace

import numpy as np
import pytest

from course_lib.data import ClipDataset, Manifest, UniformClipSampler
from course_lib.data.synth import (BIASED, CLASSES, COLORS, MIRRORED, PREFERRED, PRESETS, REVERSED, _HUES,
                                   attribute_table, generate, render, sample_params)
from course_lib.video import decode_frames, probe


def object_mask(frames: np.ndarray) -> np.ndarray:
    """(T, n, n) mask of object pixels: objects are brighter than any background."""
    return frames.max(axis=-1) > 150


def circular_centre(mask: np.ndarray) -> tuple[float, float]:
    """Object centre on the wrapping frame (circular mean), in pixels."""
    n = mask.shape[-1]
    ys, xs = np.nonzero(mask)
    ang = lambda v: np.angle(np.exp(2j * np.pi * v / n).mean()) * n / (2 * np.pi) % n  # noqa: E731
    return ang(xs), ang(ys)


def orientation(mask: np.ndarray) -> float:
    """Axis angle in degrees, maths convention (y up), after centring the object."""
    n = mask.shape[-1]
    cx, cy = circular_centre(mask)
    m = np.roll(mask, (round(n / 2 - cy), round(n / 2 - cx)), axis=(0, 1))
    ys, xs = np.nonzero(m)
    x, y = xs - xs.mean(), -(ys - ys.mean())
    return np.rad2deg(0.5 * np.arctan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean()))


def motion(label: str, frames: np.ndarray) -> float:
    """The signed motion each class is about, measured from pixels (positive = the class's direction)."""
    mask = object_mask(frames)
    n = mask.shape[-1]
    if label.startswith("move_"):
        axis = 0 if label in ("move_left", "move_right") else 1
        c = np.array([circular_centre(m)[axis] for m in mask])
        step = np.median((np.diff(c) + n / 2) % n - n / 2)
        return -step if label in ("move_left", "move_up") else step
    if label.startswith("rotate_"):
        a = np.array([orientation(m) for m in mask])
        step = np.median((np.diff(a) + 90) % 180 - 90)
        return step if label == "rotate_ccw" else -step
    area = mask.reshape(len(mask), -1).sum(1).astype(float)
    return (area[-1] - area[0]) * (1 if label == "grow" else -1)


@pytest.mark.parametrize("label", CLASSES)
def test_motion_defines_the_class_and_reversal_flips_it(label):
    for seed in range(3):
        p = dict(label=label, num_frames=24, shape="ellipse", texture="solid", background="flat", color="red",
                 hue=0.0, size=0.18, speed=1.0, seed=seed)
        frames = render(p, 96)
        assert frames.dtype == np.uint8 and frames.shape == (24, 96, 96, 3)
        assert motion(label, frames) > 0
        # played backwards, the clip shows the reversed class's motion
        assert motion(REVERSED[label], frames[::-1].copy()) > 0


@pytest.mark.parametrize("label", CLASSES)
def test_a_horizontal_flip_shows_the_mirrored_class(label):
    """Mirrored left-right, move_left moves right and rotate_cw turns anticlockwise (MIRRORED); the
    other classes keep their motion. So a flip is not a label-preserving augmentation here."""
    for seed in range(3):
        p = dict(label=label, num_frames=24, shape="ellipse", texture="solid", background="flat", color="red",
                 hue=0.0, size=0.18, speed=1.0, seed=seed)
        mirrored = render(p, 96)[:, :, ::-1].copy()
        shown = MIRRORED.get(label, label)
        assert motion(shown, mirrored) > 0
        if shown != label:
            assert motion(label, mirrored) < 0


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.1% quantile of chi-square (Wilson-Hilferty approximation)."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def test_appearance_is_independent_of_the_class():
    params = sample_params(PRESETS["default"])
    assert len(params) == 8 * 75 and sorted({p["label"] for p in params}) == sorted(CLASSES)
    for attr in ("shape", "texture", "background", "color"):
        values = sorted({p[attr] for p in params})
        table = np.array([[sum(p["label"] == c and p[attr] == v for p in params) for v in values] for c in CLASSES])
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
        chi2 = ((table - expected) ** 2 / expected).sum()
        assert chi2 < chi2_critical((len(CLASSES) - 1) * (len(values) - 1)), attr
    for attr in ("size", "speed"):
        means = [np.mean([p[attr] for p in params if p["label"] == c]) for c in CLASSES]
        assert np.ptp(means) < 0.15 * np.mean(means), attr


def test_a_single_frame_does_not_tell_the_class():
    """Across many videos, frame statistics of each reversal pair match: position for
    left/right, object area for grow/shrink."""
    rng = np.random.default_rng(0)
    base = dict(shape="square", texture="solid", background="flat", color="red", hue=0.0, size=0.16, speed=1.0)
    stats = {}
    for label in ("move_left", "move_right", "grow", "shrink"):
        values = []
        for seed in range(60):
            frames = render(dict(base, label=label, num_frames=40, seed=seed), 48)
            m = object_mask(frames[rng.integers(40)])
            values.append(circular_centre(m)[0] if label.startswith("move") else m.sum())
        stats[label] = np.array(values, float)
    # x positions: uniform over the frame for both directions
    for label in ("move_left", "move_right"):
        assert abs(stats[label].mean() - 24) < 4 and abs(stats[label].std() - 48 / np.sqrt(12)) < 3
    g, s = stats["grow"], stats["shrink"]
    assert abs(g.mean() - s.mean()) < 0.15 * g.mean()


def test_generation_is_deterministic_and_readable(tmp_path, synth_quick):
    cfg = replace(PRESETS["quick"], train_per_class=2, test_per_class=1, min_frames=24, max_frames=32)
    from course_lib.data.synth import generate

    again = generate(tmp_path, cfg, workers=2, progress=False)  # other worker count, same data
    assert [(e.path, e.label, e.split, e.num_frames, e.attrs) for e in again] == \
           [(e.path, e.label, e.split, e.num_frames, e.attrs) for e in synth_quick]
    for a, b in zip(synth_quick, again):  # identical pixels, whichever process encoded them
        frames = range(a.num_frames)
        assert np.array_equal(decode_frames(synth_quick.path(a), frames), decode_frames(again.path(b), frames)), a.path
    b = again[5]
    info = probe(again.path(b))
    assert info.num_frames == b.num_frames and info.width == cfg.size and info.codec == "h264"
    assert info.keyframe_interval == cfg.keyframe_interval
    loaded = Manifest.load(tmp_path / "manifest.jsonl")
    assert loaded.counts() == {"train": {c: 2 for c in CLASSES}, "test": {c: 1 for c in CLASSES}}
    assert set(loaded[0].attrs) == {"shape", "texture", "background", "color", "size", "speed"}
    ds = ClipDataset(loaded, UniformClipSampler(clip_len=8, num_clips=2), split="test")
    assert ds[0]["clips"].shape == (2, 3, 8, 64, 64)


def test_ensure_reuses_matching_data_and_regenerates_otherwise(tmp_path):
    from course_lib.data.synth import ensure

    cfg = replace(PRESETS["quick"], train_per_class=1, test_per_class=1, min_frames=16, max_frames=16)
    first = ensure(tmp_path, cfg=cfg, progress=False)
    stamp = (tmp_path / "synth.json").stat().st_mtime_ns
    assert len(ensure(tmp_path, cfg=cfg, progress=False)) == len(first)
    assert (tmp_path / "synth.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    first.path(first[0]).unlink()  # a lost file triggers regeneration
    ensure(tmp_path, cfg=cfg, progress=False)
    assert first.path(first[0]).exists()
    bigger = ensure(tmp_path, cfg=replace(cfg, train_per_class=2), progress=False)
    assert len(bigger) == 8 * 3


def test_static_bias_makes_appearance_name_the_class_and_changes_nothing_else():
    """The static-bias twin: at P = 0 appearance and class are independent (Cramer's V about 0, votes near
    chance); at P = 1 the colour names the class on at least 80% of the test videos; every other draw is
    the same video for video, so the two datasets differ in appearance only."""
    plain = sample_params(PRESETS["default"])
    for bias in (0.0, 0.5, 1.0):
        twin = sample_params(replace(PRESETS["default"], static_bias=bias))
        for a, b in zip(plain, twin):
            assert {k: v for k, v in a.items() if k not in (*BIASED, "hue")} == \
                   {k: v for k, v in b.items() if k not in (*BIASED, "hue")}
            centre = _HUES[COLORS.index(b["color"])]
            assert min(abs(b["hue"] - centre), 1 - abs(b["hue"] - centre)) <= 0.03 + 1e-9  # the hue fits the colour
        if bias == 0:
            assert twin == plain  # today's data
    independent = attribute_table(plain)
    biased = attribute_table(sample_params(replace(PRESETS["default"], static_bias=1.0)))
    chance = 100 / len(CLASSES)
    for attr in ("background", "shape", "color", "texture"):
        assert independent[attr]["cramers_v"] < 0.1 and independent[attr]["vote"] < 2 * chance, attr
    assert biased["color"]["vote"] >= 80 and max(t["vote"] for t in biased.values()) == biased["color"]["vote"]
    assert all(biased[a]["cramers_v"] > 0.7 for a in BIASED) and biased["texture"]["cramers_v"] < 0.1
    # each class's most common colour, background and shape are its preferred ones
    twin = sample_params(replace(PRESETS["default"], static_bias=1.0))
    for label in CLASSES:
        mine = [p for p in twin if p["label"] == label]
        for attr in BIASED:
            values = [p[attr] for p in mine]
            assert max(set(values), key=values.count) == PREFERRED[label][attr]
    with pytest.raises(ValueError, match="static_bias must be between 0 and 1"):
        replace(PRESETS["default"], static_bias=1.5)


def test_cramers_v_by_hand():
    """Bias-corrected Cramer's V on a 2 x 2 table written out: counts [[a, b], [c, d]]."""
    videos = ([{"label": "x", "split": "train", "k": "p"}] * 30 + [{"label": "x", "split": "test", "k": "q"}] * 10
              + [{"label": "y", "split": "train", "k": "q"}] * 20 + [{"label": "y", "split": "test", "k": "q"}] * 40)
    table = np.array([[30.0, 0.0], [10.0, 60.0]])  # value p/q x class x/y
    n = table.sum()
    expected = np.outer(table.sum(1), table.sum(0)) / n
    phi2 = max(0.0, ((table - expected) ** 2 / expected).sum() / n - 1 / (n - 1))
    k = 2 - 1 / (n - 1)
    got = attribute_table(videos, attrs=("k",))["k"]
    assert got["cramers_v"] == pytest.approx(np.sqrt(phi2 / (k - 1)))
    assert got["vote"] == pytest.approx(100 * 40 / 50)  # q -> y (20 train y against 0 train x): the 10 test x miss


def test_the_biased_twin_is_cached_beside_the_plain_data(tmp_path, monkeypatch):
    from course_lib.data import builtin_dataset
    from course_lib.data import synth

    small = replace(PRESETS["quick"], train_per_class=1, test_per_class=1, min_frames=16, max_frames=16, size=32)
    monkeypatch.setitem(synth.PRESETS, "quick", small)
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    plain, twin = builtin_dataset(quick=True, progress=False), builtin_dataset(quick=True, static_bias=1, progress=False)
    assert plain.root.name == "synth-quick" and twin.root.name == "synth-quick-bias1"
    assert [e.label for e in plain] == [e.label for e in twin]
    stamp = twin.root / "synth.json"
    before = stamp.stat().st_mtime_ns
    assert len(builtin_dataset(quick=True, static_bias=1, progress=False)) == len(twin)
    assert stamp.stat().st_mtime_ns == before  # cached
    # data made before static_bias existed (its stamp lacks the setting) is the plain data, kept
    import json

    old = plain.root / "synth.json"
    info = json.loads(old.read_text())
    del info["config"]["static_bias"]
    old.write_text(json.dumps(info))
    builtin_dataset(quick=True, progress=False)
    assert "static_bias" not in json.loads(old.read_text())["config"]  # not regenerated


def test_dataset_and_preparation_workers_are_never_forked_from_this_process(tmp_path, monkeypatch):
    """A worker forked from a process that has used FFmpeg inherits its swscale thread pools, and freeing one there
    deadlocks (two CI runs hung so): generation and preparation start their workers clean (runtime.worker_pool)."""
    import os
    from course_lib.data.prepare import prepare
    from course_lib.video import write_video
    write_video(tmp_path / "warm.mp4", np.zeros((4, 32, 48, 3), np.uint8))  # this process has used swscale now
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("a worker was forked from the test process"))
    cfg = replace(PRESETS["quick"], train_per_class=1, test_per_class=1, min_frames=16, max_frames=16)
    manifest = generate(tmp_path / "synth", cfg, workers=2, progress=False)
    assert len(manifest) == len(CLASSES) * 2 and all(probe(manifest.path(e)).num_frames == 16 for e in manifest)
    src = tmp_path / "source"
    for i, label in enumerate(("a", "a", "b")):
        write_video(src / label / f"{i}.mp4", np.full((12, 32, 48, 3), 40 * i, np.uint8))
    summary = prepare("folder", src, tmp_path / "prepared", workers=2, progress=False)
    assert summary["encoded"] == 3 and summary["failed"] == 0
