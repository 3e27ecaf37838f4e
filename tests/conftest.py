"""Shared fixtures. Loaded at start-up (tests/ is a testpath), so the test budget set below
also reaches the notebook kernels that nbval starts."""
import os

os.environ.setdefault("COURSE_MODE", "test")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from course_lib.video import write_video  # noqa: E402
from indexed import indexed_frames  # noqa: E402


@pytest.fixture(scope="session")
def indexed_video(tmp_path_factory):
    """Make an index-carrying video: indexed_video(name, n=..., **write_video kwargs) -> path."""
    root = tmp_path_factory.mktemp("videos")

    def make(name: str, n: int = 120, height: int = 64, width: int = 96, gray: bool = False, **kwargs):
        path = root / name
        if not path.exists():
            write_video(path, indexed_frames(n, height, width, gray), **kwargs)
        return path

    return make


@pytest.fixture(scope="session")
def synth_quick(tmp_path_factory):
    """A small built-in dataset (2 train + 1 test video per class), generated once per session."""
    from course_lib.data.synth import PRESETS, generate
    from dataclasses import replace

    cfg = replace(PRESETS["quick"], train_per_class=2, test_per_class=1, min_frames=24, max_frames=32)
    return generate(tmp_path_factory.mktemp("synth"), cfg, workers=1, progress=False)


@pytest.fixture
def true_fp32():
    """TF32 would make 'fp32' itself approximate on Ampere and later GPUs (tests/test_gpu.py, test_numerics.py)."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
