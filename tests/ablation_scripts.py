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
