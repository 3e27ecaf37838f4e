"""Dataset preparation: re-encoding of mixed real videos, resuming, bad videos, splits per layout."""
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from course_lib.cli import main
from course_lib.data import Manifest, read_folder
from course_lib.data.prepare import even_size, prepare
from course_lib.video import decode_frames, frame_timestamps, probe, write_video
from indexed import indexed_frames, read_index

FIXTURES = Path(__file__).parent / "fixtures"
VFR_MS = [0, 40, 100, 120, 200, 240, 280, 400, 440, 480, 520, 560, 600, 640, 680, 720, 760, 800, 840, 880]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A class-folder tree of real videos in four containers and three codecs, plus two bad files."""
    root = tmp_path_factory.mktemp("mixed")
    write_video(root / "walk/a.mp4", indexed_frames(40, 240, 320), fps=30)  # H.264, landscape
    write_video(root / "walk/b.avi", indexed_frames(30, 144, 176), codec="mpeg4", crf=None, fps=25)
    write_video(root / "walk/small.mp4", indexed_frames(12, 96, 128), fps=25)  # smaller than the short side
    write_video(root / "run/c.webm", indexed_frames(30, 300, 200), codec="libvpx-vp9", fps=24)  # portrait
    write_video(root / "run/d.mkv", indexed_frames(20, 128, 160), timestamps_ms=VFR_MS)  # variable frame rate
    write_video(root / "run/e.mp4", indexed_frames(24, 180, 320), fps=25)
    (root / "run/broken.mp4").write_bytes(b"not a video" * 100)
    data = (root / "walk/a.mp4").read_bytes()
    (root / "walk/truncated.mp4").write_bytes(data[: len(data) // 2])
    return root


def test_even_size_keeps_aspect_and_never_upscales():
    assert even_size(320, 240, 128) == (170, 128)
    assert even_size(200, 300, 128) == (128, 192)
    assert even_size(128, 96, 128) == (128, 96)  # already small: kept
    assert all(v % 2 == 0 for v in even_size(177, 145, 113))


def test_prepare_folder_of_mixed_videos(mixed, tmp_path):
    out = tmp_path / "prepared"
    summary = prepare("folder", mixed, out, workers=2, progress=False)
    assert (summary["videos"], summary["encoded"], summary["failed"], summary["skipped"]) == (6, 6, 2, 0)
    errors = [json.loads(line) for line in (out / "prepare_errors.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in errors) == ["run/broken.mp4", "walk/truncated.mp4"]
    assert all(str(mixed) in e["error"] for e in errors)  # the message names the source file

    m = Manifest.load(out)
    source = read_folder(mixed)
    good = {e.path: e.split for e in source if "broken" not in e.path and "truncated" not in e.path}
    assert {e.path: e.split for e in m} == {Path(p).with_suffix(".mp4").as_posix(): s for p, s in good.items()}
    for e in m:
        src = next(mixed.glob(f"{Path(e.path).with_suffix('')}.*"))
        a, b = probe(src), probe(m.path(e))
        assert (b.codec, b.pix_fmt, b.keyframe_interval if b.num_frames > 16 else 16) == ("h264", "yuv420p", 16)
        assert min(b.width, b.height) == min(128, a.width, a.height) and b.width % 2 == b.height % 2 == 0
        assert abs(b.width / b.height - a.width / a.height) < 0.02
        assert b.num_frames == a.num_frames == e.num_frames
        pts, _ = frame_timestamps(m.path(e))  # exact indices also in the VFR video
        frames = decode_frames(m.path(e), np.arange(b.num_frames), timestamps=pts)
        assert [read_index(f) for f in frames] == list(range(b.num_frames))  # every frame, in order
    vfr = next(e for e in m if e.path == "run/d.mp4")
    assert vfr.attrs == {"vfr": True}
    pts, _ = frame_timestamps(m.path(vfr))
    with av.open(str(m.path(vfr))) as c:
        tb = c.streams.video[0].time_base
    ms = np.round((pts - pts[0]) * float(tb) * 1000).astype(int)
    assert ms.tolist() == VFR_MS  # the source's timing is kept


def test_prepare_resumes_and_remakes_broken_outputs(mixed, tmp_path):
    out = tmp_path / "prepared"
    prepare("folder", mixed, out, workers=1, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    (out / "run/c.mp4").write_bytes(b"half a file")  # as if a run died while writing it
    (out / "run/.e.123.tmp.mp4").write_bytes(b"leftover")
    summary = prepare("folder", mixed, out, workers=1, progress=False)
    assert (summary["encoded"], summary["skipped"], summary["failed"]) == (1, 5, 2)
    assert probe(out / "run/c.mp4").num_frames == 30
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.name != "c.mp4")
    assert len(Manifest.load(out)) == 6


def _layout(root: Path, rel_paths, make):
    for i, rel in enumerate(rel_paths):
        write_video(root / rel, indexed_frames(18, 120, 160), **make(i))


def test_prepare_ucf101_official_split(tmp_path):
    src = tmp_path / "UCF101"
    shutil.copytree(FIXTURES / "ucf101/splits", src / "ucfTrainTestlist")
    listed = [line.split()[0] for name in ("trainlist01.txt", "testlist01.txt")
              for line in (src / "ucfTrainTestlist" / name).read_text().splitlines() if line.strip()]
    _layout(src, listed[1:], lambda i: {"codec": "mpeg4", "crf": None})  # the first listed video is missing
    summary = prepare("ucf101", src, tmp_path / "out", workers=1, progress=False)
    assert (summary["videos"], summary["missing"], summary["failed"]) == (len(listed) - 1, 1, 0)
    m = Manifest.load(tmp_path / "out")
    assert m.classes == ["ApplyEyeMakeup", "Archery", "YoYo"]
    assert m.counts() == {"train": {"ApplyEyeMakeup": 1, "Archery": 1, "YoYo": 1},
                          "test": {"ApplyEyeMakeup": 1, "Archery": 1, "YoYo": 1}}
    assert all(e.path.endswith(".mp4") and m.path(e).exists() for e in m)


def test_prepare_hmdb51_official_split(tmp_path):
    src = tmp_path / "hmdb51"
    shutil.copytree(FIXTURES / "hmdb51/splits", src / "testTrainMulti_7030_splits")
    rel = []
    for f in sorted((src / "testTrainMulti_7030_splits").glob("*_test_split1.txt")):
        label = f.name.removesuffix("_test_split1.txt")
        rel += [f"{label}/{line.split()[0]}" for line in f.read_text().splitlines() if line.strip()]
    _layout(src, rel, lambda i: {"codec": "mpeg4", "crf": None})
    prepare("hmdb51", src, tmp_path / "out", workers=1, progress=False)
    m = Manifest.load(tmp_path / "out")
    expected = {}
    for f in sorted((src / "testTrainMulti_7030_splits").glob("*_test_split1.txt")):
        for line in f.read_text().splitlines():
            name, code = line.split()[:2]
            if code != "0":
                expected[f"{f.name.removesuffix('_test_split1.txt')}/{Path(name).stem}.mp4"] = \
                    "train" if code == "1" else "test"
    assert {e.path: e.split for e in m} == expected  # videos marked 0 (unused) are left out


def test_prepare_kinetics_from_csvs(tmp_path):
    src = tmp_path / "k400"
    (src / "annotations").mkdir(parents=True)
    shutil.copy(FIXTURES / "kinetics/train.csv", src / "annotations/train.csv")
    shutil.copy(FIXTURES / "kinetics/validate.csv", src / "annotations/validate.csv")
    rows = []
    for split, name in (("train", "train.csv"), ("val", "validate.csv")):
        lines = (src / "annotations" / name).read_text().splitlines()[1:]
        for line in lines:
            label, yid, start, end = line.split(",")[:4]
            rows.append((split, label, f"{yid}_{int(start):06d}_{int(end):06d}"))
    present = rows[:-1]  # the last one has left YouTube
    _layout(src, [f"{s}/{label}/{stem}.mp4" for s, label, stem in present], lambda i: {"fps": 30})
    summary = prepare("kinetics", src, tmp_path / "out", workers=1, progress=False)
    assert (summary["videos"], summary["missing"]) == (len(present), 1)
    m = Manifest.load(tmp_path / "out")
    assert sorted((e.split, e.label, Path(e.path).stem) for e in m) == sorted(present)
    assert max(probe(m.path(e)).height for e in m) == 120  # 160x120: not upscaled


def test_prepare_command_line(mixed, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["prepare", "folder", "--src", str(mixed), "--out", str(out), "--workers", "1", "--no-progress",
                 "--short-side", "64", "--keyframe-interval", "8"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["settings"]["short_side"] == 64 and summary["failed"] == 2
    assert "2 video(s) could not be prepared" in captured.err
    info = probe(out / "walk/a.mp4")
    assert (info.height, info.keyframe_interval) == (64, 8)

    assert main(["prepare", "ucf101", "--src", str(mixed), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "ucfTrainTestlist: split folder not found; give it with --splits" in capsys.readouterr().err
    assert main(["prepare", "folder", "--src", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere: source folder not found" in capsys.readouterr().err
    assert main(["prepare", "folder", "--src", str(mixed), "--out", str(mixed)]) == 2
    assert "--out must differ from --src" in capsys.readouterr().err


def test_keyframes_can_be_sparser_than_the_source(tmp_path):
    """A decoded frame keeps its picture type, and libx264 makes every frame marked I a keyframe: the source's
    keyframes (every 8 frames here) would survive a --keyframe-interval of 24 unless the type is cleared."""
    from course_lib.data.prepare import EncodeSettings, reencode
    src = write_video(tmp_path / "src.mp4", indexed_frames(72, 64, 64), keyframe_interval=8)
    assert probe(src).keyframe_interval == 8
    out = reencode(src, tmp_path / "out.mp4", EncodeSettings(short_side=64, keyframe_interval=24))
    assert probe(out).keyframe_interval == 24
    assert [read_index(f) for f in decode_frames(out, [0, 23, 24, 71])] == [0, 23, 24, 71]
