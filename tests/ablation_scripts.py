"""The course's ablation scripts (notebooks/ablations/*.py, not a package), loaded as modules for their tests."""
import importlib.util
from pathlib import Path

ABLATIONS = Path(__file__).resolve().parents[1] / "notebooks" / "ablations"


def load_ablation(name: str):
    """notebooks/ablations/<name>.py as a fresh module."""
    spec = importlib.util.spec_from_file_location(name, ABLATIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_quick_course(monkeypatch, root) -> None:
    """Run an ablation script at the test budget on a tiny built-in dataset generated under ``root``."""
    from dataclasses import replace

    from course_lib.data import synth

    small = replace(synth.PRESETS["quick"], train_per_class=2, test_per_class=1, min_frames=24, max_frames=24)
    monkeypatch.setitem(synth.PRESETS, "quick", small)
    monkeypatch.setenv("COURSE_DATA", str(root))
    monkeypatch.setenv("COURSE_MODE", "test")
    monkeypatch.delenv("COURSE_DATASET", raising=False)
