"""Manifests: the JSONL format and the folder / UCF101 / HMDB51 / Kinetics readers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from course_lib.data import (Manifest, ManifestError, VideoEntry, probe_manifest, read_folder, read_hmdb51,
                             read_kinetics, read_ucf101)
from course_lib.video import write_video

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    return write_video(path, frames)


def lay_out(root: Path, rel_paths, video: Path):
    for rel in rel_paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / rel)


def split_lines(path: Path):
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def test_round_trip(tmp_path):
    m = Manifest(tmp_path, ["a", "b"], [VideoEntry("a/1.mp4", "a", "train", 10, 25.0, {"shape": "star"}),
                                        VideoEntry("b/2.mp4", "b", "test")])
    path = m.save(tmp_path / "manifest.jsonl")
    header = json.loads(path.read_text().splitlines()[0])
    assert header["classes"] == ["a", "b"]
    back = Manifest.load(tmp_path)  # a folder means <folder>/manifest.jsonl
    assert back.classes == m.classes and back.entries == m.entries and back.root == tmp_path
    assert back.split("test").entries == [m.entries[1]] and back.split("test").classes == ["a", "b"]
    assert back.path(back[0]) == tmp_path / "a/1.mp4"
    assert back.counts() == {"train": {"a": 1}, "test": {"b": 1}}


def test_bad_manifests(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        Manifest.load(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "course_lib.manifest", "version": 1, "classes": ["a"]}\n'
                   '{"path": "x.mp4", "label": "zzz", "split": "train"}\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl: line 2 .*'zzz'"):
        Manifest.load(bad)
    bad.write_text("path,label\n")
    with pytest.raises(ManifestError, match="bad.jsonl: line 1"):
        Manifest.load(bad)
    m = Manifest(tmp_path, ["a"], [VideoEntry("x.mp4", "a", "train")])
    with pytest.raises(ManifestError, match="no videos in split 'test'"):
        m.split("test")


def test_folder_reader_is_stratified_and_deterministic(tmp_path, tiny_video):
    lay_out(tmp_path, [f"{c}/{i}.mp4" for c in ("run", "jump", "swim") for i in range(10)], tiny_video)
    (tmp_path / "run" / "notes.txt").write_text("not a video")
    m = read_folder(tmp_path, test_fraction=0.2, seed=3)
    assert m.classes == ["jump", "run", "swim"] and len(m) == 30
    assert m.counts()["test"] == {"jump": 2, "run": 2, "swim": 2}
    again = read_folder(tmp_path, test_fraction=0.2, seed=3)
    assert [e.split for e in again] == [e.split for e in m]
    other = read_folder(tmp_path, test_fraction=0.2, seed=4)
    assert [e.split for e in other] != [e.split for e in m]
    probed = probe_manifest(m, workers=2)
    assert all(e.num_frames == 9 and e.fps == 25.0 for e in probed)


def test_folder_reader_errors(tmp_path):
    with pytest.raises(ManifestError, match="dataset folder not found"):
        read_folder(tmp_path / "missing")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ManifestError, match="no videos found"):
        read_folder(tmp_path)


def test_ucf101_official_splits(tmp_path, tiny_video):
    sd = FIXTURES / "ucf101" / "splits"
    lay_out(tmp_path, split_lines(sd / "trainlist01.txt") + split_lines(sd / "testlist01.txt"), tiny_video)
    m = read_ucf101(tmp_path, sd, fold=1)
    assert m.classes == ["ApplyEyeMakeup", "Archery", "YoYo"]
    assert m.counts() == {"train": {"ApplyEyeMakeup": 2, "Archery": 1, "YoYo": 1},
                          "test": {"ApplyEyeMakeup": 1, "Archery": 1, "YoYo": 1}}
    assert m[2].path == "Archery/v_Archery_g08_c01.avi" and m.label_index(m[2].label) == 1


def test_ucf101_errors(tmp_path, tiny_video):
    sd = FIXTURES / "ucf101" / "splits"
    with pytest.raises(ManifestError, match=r"trainlist02.txt: line 2 has unknown class 'Juggling'"):
        lay_out(tmp_path, ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"], tiny_video)
        read_ucf101(tmp_path, sd, fold=2)
    with pytest.raises(ManifestError, match=r"trainlist03.txt: split file not found"):
        read_ucf101(tmp_path, sd, fold=3)
    with pytest.raises(ManifestError, match=r"trainlist01.txt line 1: lists .* which does not exist"):
        read_ucf101(tmp_path / "elsewhere", sd, fold=1)
    with pytest.warns(UserWarning, match=r"skipped 7 listed video"):
        m = read_ucf101(tmp_path / "elsewhere", sd, fold=1, missing="skip")
    assert len(m) == 0


def test_hmdb51_official_splits(tmp_path, tiny_video):
    sd = FIXTURES / "hmdb51" / "splits"
    rels = [f"{f.name.split('_test_split')[0]}/{v}" for f in sd.glob("*split1.txt") for v in split_lines(f)]
    lay_out(tmp_path, rels, tiny_video)
    m = read_hmdb51(tmp_path, sd, fold=1)
    assert m.classes == ["brush_hair", "cartwheel"]
    assert m.counts() == {"train": {"brush_hair": 1, "cartwheel": 1}, "test": {"brush_hair": 1, "cartwheel": 1}}
    assert len(m) == 4  # the video marked 0 (unused) is left out


def test_hmdb51_errors(tmp_path):
    sd = FIXTURES / "hmdb51" / "splits"
    with pytest.raises(ManifestError, match=r"cartwheel_test_split2.txt: line 1 has unknown split label"):
        read_hmdb51(tmp_path, sd, fold=2, missing="skip")
    with pytest.raises(ManifestError, match=r"no split files '\*_test_split3.txt'"):
        read_hmdb51(tmp_path, sd, fold=3)
    with pytest.raises(ManifestError, match="split folder not found"):
        read_hmdb51(tmp_path, tmp_path / "nosplits")


def test_kinetics_csvs(tmp_path, tiny_video):
    kd = FIXTURES / "kinetics"
    lay_out(tmp_path, ["train/abseiling/---QUuC4vJs_000084_000094.mp4", "train/abseiling/--3ouPhoy2A_000020_000030.mp4",
                       "train/air drumming/--nQbRBEz2s_000104_000114.mp4", "val/0wR5jVB-WPk_000417_000427.mp4",
                       "val/1JyE4n9dcMY_000006_000016.mp4"], tiny_video)
    with pytest.warns(UserWarning, match="skipped 1 listed video"):  # -0XbUVK6FMQ was never downloaded
        m = read_kinetics(tmp_path, {"train": kd / "train.csv", "val": kd / "validate.csv"})
    assert m.classes == ["abseiling", "air drumming"]
    assert m.counts() == {"train": {"abseiling": 2, "air drumming": 1}, "val": {"abseiling": 1, "air drumming": 1}}
    assert m.split("val")[0].path == "val/0wR5jVB-WPk_000417_000427.mp4"  # found by stem, flat layout
    with pytest.raises(ManifestError, match="train.csv line 5: lists"):
        read_kinetics(tmp_path, {"train": kd / "train.csv"}, missing="error")


def test_kinetics_errors(tmp_path):
    kd = FIXTURES / "kinetics"
    with pytest.raises(ManifestError, match=r"validate_unknown.csv: line 3 has unknown label 'zumba'"):
        read_kinetics(tmp_path, {"train": kd / "train.csv", "val": kd / "validate_unknown.csv"}, missing="skip")
    with pytest.raises(ManifestError, match="no_columns.csv: needs the columns"):
        read_kinetics(tmp_path, {"train": kd / "no_columns.csv"})
    with pytest.raises(ManifestError, match="test.csv: annotation CSV not found"):
        read_kinetics(tmp_path, {"test": kd / "test.csv"})


def test_probe_manifest_skips_bad_videos(tmp_path, tiny_video):
    lay_out(tmp_path, ["a/good.mp4"], tiny_video)
    (tmp_path / "a" / "bad.mp4").write_text("not a video")
    m = read_folder(tmp_path, test_fraction=0)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable video\(s\) of 2; first: .*bad.mp4"):
        probed = probe_manifest(m)
    assert [e.path for e in probed] == ["a/good.mp4"]
    from course_lib.video import VideoError
    with pytest.raises(VideoError, match="bad.mp4"):
        probe_manifest(m, on_error="raise")
