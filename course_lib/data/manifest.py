"""One manifest format for every dataset, and readers for the usual layouts.

A manifest is a JSON Lines file. The first line is a header with the class list; every
other line is one video::

    {"format": "course_lib.manifest", "version": 1, "classes": ["move_left", ...]}
    {"path": "move_left/move_left_0000.mp4", "label": "move_left", "split": "train",
     "num_frames": 72, "fps": 25.0, "attrs": {"shape": "star", "color": "red"}}

``path`` is relative to the manifest's folder (or absolute). ``attrs`` holds free
per-video attributes (the built-in dataset records appearance there; a VFR video gets
``"vfr": true``). Readers: ``read_folder`` (class folders, deterministic stratified
split), ``read_ucf101`` and ``read_hmdb51`` (official split files), ``read_kinetics``
(annotation CSVs).
"""
from __future__ import annotations

import csv
import json
import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..video import VideoError, probe

FORMAT = "course_lib.manifest"
VERSION = 1
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


class ManifestError(Exception):
    """A manifest or split file is missing or malformed; the message names the file."""


@dataclass
class VideoEntry:
    path: str  # relative to the manifest root, POSIX separators
    label: str  # class name
    split: str  # "train", "test", "val", ...
    num_frames: int | None = None
    fps: float | None = None
    attrs: dict = field(default_factory=dict)


@dataclass
class Manifest:
    root: Path  # folder that entry paths are relative to
    classes: list[str]
    entries: list[VideoEntry]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.entries)

    def __getitem__(self, i: int) -> VideoEntry:
        return self.entries[i]

    def path(self, entry: VideoEntry) -> Path:
        return Path(entry.path) if os.path.isabs(entry.path) else self.root / entry.path

    def label_index(self, label: str) -> int:
        return self.classes.index(label)

    def split(self, name: str) -> "Manifest":
        """The entries of one split; the class list (and so label indices) is kept."""
        entries = [e for e in self.entries if e.split == name]
        if not entries:
            have = sorted({e.split for e in self.entries})
            raise ManifestError(f"{self.root}: no videos in split {name!r} (splits: {have}).")
        return replace(self, entries=entries)

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: number of videos}}."""
        out: dict[str, dict[str, int]] = {}
        for e in self.entries:
            out.setdefault(e.split, {}).setdefault(e.label, 0)
            out[e.split][e.label] += 1
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON Lines atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"format": FORMAT, "version": VERSION, "classes": self.classes}) + "\n")
            for e in self.entries:
                f.write(json.dumps(asdict(e)) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.jsonl"
        if not path.exists():
            raise ManifestError(f"{path}: manifest not found.")
        with open(path, encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
        if not lines:
            raise ManifestError(f"{path}: manifest is empty.")
        try:
            header = json.loads(lines[0][1])
        except json.JSONDecodeError:
            raise ManifestError(f"{path}: line 1 is not JSON; not a course_lib manifest.") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ManifestError(f"{path}: line 1 is not a course_lib manifest header.")
        classes = list(header["classes"])
        entries = []
        for n, line in lines[1:]:
            try:
                entry = VideoEntry(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as e:
                raise ManifestError(f"{path}: line {n} is not a valid entry ({e}).") from None
            if entry.label not in classes:
                raise ManifestError(f"{path}: line {n} has label {entry.label!r}, which is not in the header's classes.")
            entries.append(entry)
        return cls(root=path.parent, classes=classes, entries=entries)


def probe_manifest(manifest: Manifest, *, workers: int = 4, on_error: str = "skip") -> Manifest:
    """Fill ``num_frames`` and ``fps`` by probing every video (threads).

    ``on_error="skip"`` drops unreadable videos with one warning that counts them;
    ``"raise"`` raises the first ``VideoError``.
    """

    def one(entry: VideoEntry):
        try:
            info = probe(manifest.path(entry))
        except VideoError as e:
            return entry, e
        attrs = dict(entry.attrs)
        if not info.constant_frame_rate:
            attrs["vfr"] = True
        return replace(entry, num_frames=info.num_frames, fps=info.fps, attrs=attrs), None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, manifest.entries))
    bad = [err for _, err in results if err is not None]
    if bad and on_error == "raise":
        raise bad[0]
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable video(s) of {len(results)}; first: {bad[0]}", stacklevel=2)
    return replace(manifest, entries=[e for e, err in results if err is None])


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _missing(path: Path, where: str, policy: str, missing: list[str]) -> bool:
    """True if ``path`` exists; otherwise record it or raise, by ``policy``."""
    if path.exists():
        return True
    if policy == "error":
        raise ManifestError(f"{where}: lists {path}, which does not exist.")
    missing.append(str(path))
    return False


class MissingVideosWarning(UserWarning):
    """Listed videos that are not on disk were skipped; ``paths`` holds them (``prepare`` counts them)."""

    def __init__(self, message: str, paths: list[str]):
        super().__init__(message)
        self.paths = paths


def _warn_missing(missing: list[str], source: str) -> None:
    if missing:
        warnings.warn(MissingVideosWarning(
            f"{source}: skipped {len(missing)} listed video(s) not found; first: {missing[0]}", missing), stacklevel=3)


def read_folder(
    root: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0, extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> Manifest:
    """A folder of class folders (``root/<class>/<video>``) with a stratified split.

    The split is deterministic: each class's sorted file list is shuffled with a seed
    derived from ``seed`` and the class name, and the first ``round(n * test_fraction)``
    (at least one when a class has two or more videos) go to ``test``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset folder not found.")
    exts = tuple(x.lower() for x in extensions)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    entries = []
    for c in classes:
        files = sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in exts)
        order = np.random.default_rng([seed, zlib.crc32(c.encode())]).permutation(len(files))
        n_test = round(len(files) * test_fraction)
        if len(files) >= 2 and test_fraction > 0:
            n_test = max(1, min(n_test, len(files) - 1))
        test = set(order[:n_test].tolist())
        entries += [VideoEntry(_rel(f, root), c, "test" if i in test else "train") for i, f in enumerate(files)]
    classes = [c for c in classes if any(e.label == c for e in entries)]
    if not entries:
        raise ManifestError(f"{root}: no videos found in class folders (extensions {', '.join(exts)}).")
    return Manifest(root=root, classes=classes, entries=entries)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        raise ManifestError(f"{path}: split file not found.")
    with open(path, encoding="utf-8") as f:
        return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]


def read_ucf101(video_root: str | os.PathLike, splits_dir: str | os.PathLike, *, fold: int = 1,
                missing: str = "error") -> Manifest:
    """UCF101 with its official split files (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``).

    ``video_root`` holds ``<Class>/v_<Class>_gXX_cYY.avi``. ``missing="skip"`` drops
    listed videos that are absent (with a warning counting them) instead of raising.
    """
    root, sd = Path(video_root), Path(splits_dir)
    ind = sd / "classInd.txt"
    classes_by_id: dict[int, str] = {}
    for n, line in _read_lines(ind):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ManifestError(f"{ind}: line {n} is not '<index> <class>'.")
        classes_by_id[int(parts[0])] = parts[1]
    classes = [classes_by_id[k] for k in sorted(classes_by_id)]
    entries, absent = [], []
    for split, name in (("train", f"trainlist{fold:02d}.txt"), ("test", f"testlist{fold:02d}.txt")):
        f = sd / name
        for n, line in _read_lines(f):
            parts = line.split()
            rel = parts[0]
            label = rel.split("/")[0]
            if label not in classes:
                raise ManifestError(f"{f}: line {n} has unknown class {label!r} (not in {ind.name}).")
            if len(parts) > 1 and classes_by_id.get(int(parts[1])) != label:
                raise ManifestError(f"{f}: line {n} gives label {parts[1]} but {ind.name} numbers {label!r} "
                                    f"as {classes.index(label) + 1}.")
            if _missing(root / rel, f"{f} line {n}", missing, absent):
                entries.append(VideoEntry(rel, label, split))
    _warn_missing(absent, "UCF101")
    return Manifest(root=root, classes=classes, entries=entries)


def read_hmdb51(video_root: str | os.PathLike, splits_dir: str | os.PathLike, *, fold: int = 1,
                missing: str = "error") -> Manifest:
    """HMDB51 with its official split files (``<class>_test_split<N>.txt``: 1 train, 2 test, 0 unused).

    ``video_root`` holds ``<class>/<video>.avi``.
    """
    root, sd = Path(video_root), Path(splits_dir)
    if not sd.is_dir():
        raise ManifestError(f"{sd}: split folder not found.")
    suffix = f"_test_split{fold}.txt"
    files = sorted(sd.glob(f"*{suffix}"))
    if not files:
        raise ManifestError(f"{sd}: no split files '*{suffix}' found.")
    classes = [f.name[: -len(suffix)] for f in files]
    entries, absent = [], []
    for f, label in zip(files, classes):
        for n, line in _read_lines(f):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ManifestError(f"{f}: line {n} has unknown split label {line!r} (expected '<video> 0|1|2').")
            if parts[1] == "0":
                continue
            rel = f"{label}/{parts[0]}"
            if _missing(root / rel, f"{f} line {n}", missing, absent):
                entries.append(VideoEntry(rel, label, "train" if parts[1] == "1" else "test"))
    _warn_missing(absent, "HMDB51")
    return Manifest(root=root, classes=classes, entries=entries)


def read_kinetics(video_root: str | os.PathLike, csv_files: dict[str, str | os.PathLike], *,
                  missing: str = "skip") -> Manifest:
    """Kinetics-400/600/700 from the annotation CSVs (``label,youtube_id,time_start,time_end,split``).

    ``csv_files`` maps a split name to its CSV, e.g. ``{"train": "train.csv", "val":
    "validate.csv"}``. Videos are found anywhere under ``video_root`` by their file stem,
    ``<youtube_id>_<start:06d>_<end:06d>`` (the layout of the common downloaders).
    The classes are those of the first CSV; a label in another CSV that is not among
    them is an error. Missing videos are skipped with a counting warning by default
    (many Kinetics videos have left YouTube); ``missing="error"`` raises instead.
    """
    root = Path(video_root)
    if not root.is_dir():
        raise ManifestError(f"{root}: video folder not found.")
    by_stem = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS}
    classes: list[str] | None = None
    entries, absent = [], []
    for split, csv_path in csv_files.items():
        csv_path = Path(csv_path)
        if not csv_path.exists():
            raise ManifestError(f"{csv_path}: annotation CSV not found.")
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not rows or not need <= set(rows[0]):
            raise ManifestError(f"{csv_path}: needs the columns {sorted(need)}.")
        if classes is None:
            classes = sorted({r["label"] for r in rows})
        for n, r in enumerate(rows, 2):
            if r["label"] not in classes:
                raise ManifestError(f"{csv_path}: line {n} has unknown label {r['label']!r} (not in the first CSV).")
            stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            p = by_stem.get(stem, root / split / r["label"] / f"{stem}.mp4")
            if _missing(p, f"{csv_path} line {n}", missing, absent):
                entries.append(VideoEntry(_rel(p, root), r["label"], split))
    _warn_missing(absent, "Kinetics")
    return Manifest(root=root, classes=classes or [], entries=entries)
