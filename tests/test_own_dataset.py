"""COURSE_DATASET: the training notebooks run on a prepared dataset instead of the built-in one."""
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_lib import course
from course_lib.data import course_dataset
from course_lib.data.prepare import prepare
from course_lib.runtime import dataset_override
from course_lib.machine import setup
from course_lib.settings import SettingError
from course_lib.video import write_video

REPO = Path(__file__).resolve().parents[1]
CODECS = [("libx264", ".mp4", 23), ("mpeg4", ".avi", None), ("libvpx-vp9", ".webm", 30)]


def moving_bars(n: int, height: int, width: int, step: int, seed: int) -> np.ndarray:
    """(n, height, width, 3) uint8 frames: vertical bars sliding by ``step`` pixels per frame."""
    rng = np.random.default_rng(seed)
    x = np.arange(width)
    colour = rng.integers(60, 255, size=3)
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        on = ((x + step * t) // 8) % 2 == 0
        frames[t, :, on] = colour
    return frames


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three classes of six videos each, in three containers and codecs, through ``prepare folder``."""
    src = tmp_path_factory.mktemp("own") / "src"
    for c, (label, step) in enumerate((("slide_left", -3), ("slide_right", 3), ("still", 0))):
        for j in range(6):
            codec, ext, crf = CODECS[j % 3]
            write_video(src / label / f"{label}_{j}{ext}", moving_bars(48, 72, 96, step, 10 * c + j), codec=codec,
                        crf=crf, fps=25)
    out = src.parent / "prepared videos"  # a space in the path, as on many laptops
    summary = prepare("folder", src, out, workers=1, progress=False)
    assert summary["failed"] == 0 and summary["encoded"] == 18
    return out


def test_course_dataset_follows_the_setting(prepared, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.setenv("COURSE_MODE", "test")
    monkeypatch.setenv("COURSE_DATASET", str(prepared))  # the folder; its manifest.jsonl is found
    manifest = course_dataset()
    assert manifest.classes == ["slide_left", "slide_right", "still"] and len(manifest) == 18
    s = setup()
    assert not s.builtin and s.dataset == (prepared / "manifest.jsonl").resolve()
    assert s.runs.parent == tmp_path / "runs" and s.runs.name.startswith("test-prepared videos-")
    assert f"COURSE_DATASET={s.dataset}" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_DATASET", str(tmp_path / "nowhere"))
    with pytest.raises(SettingError, match=r"^COURSE_DATASET=.*nowhere: no manifest there"):
        dataset_override()
    monkeypatch.delenv("COURSE_DATASET")
    s = setup()
    assert s.builtin and s.runs == tmp_path / "runs" / "test"


def test_a_training_notebook_runs_on_a_prepared_dataset(prepared, monkeypatch, tmp_path):
    """Notebook 04 at the test budget on the prepared folder: it trains on its three classes and splits, skips the
    cells about the built-in data's attributes and twin, and never generates the built-in data."""
    from nbclient import NotebookClient

    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.setenv("COURSE_MODE", "test")
    monkeypatch.setenv("COURSE_DATASET", str(prepared / "manifest.jsonl"))
    nb = nbformat.read(REPO / "notebooks" / "04_contrastive_learning.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}},
                   ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    text = "".join(o.get("text", "") for o in outputs)
    assert "COURSE_DATASET=" in text and text.count("skipped: ") == 2
    runs = next((tmp_path / "runs").glob("test-prepared videos-*"))  # the prepared dataset's own run cache
    for method in ("simclr", "moco", "supervised"):
        folder = runs / course.spec(method).folder
        assert Path(json.loads((folder / "run.json").read_text(encoding="utf-8"))["data"]) == prepared.resolve()
        record = json.loads((folder / "scores.json").read_text(encoding="utf-8"))  # measured on its classes
        assert record["classes"] == 3 and {"linear", "R@1"} <= set(record["scores"])
    assert not (tmp_path / "synth-quick").exists() and not (tmp_path / "synth-quick-bias1").exists()
