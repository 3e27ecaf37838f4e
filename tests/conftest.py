"""Shared fixtures. Loaded at start-up (tests/ is a testpath), so the quick-mode switch
below also reaches the notebook kernels that nbval starts."""
import os

os.environ.setdefault("COURSE_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course_lib.video import write_video  # noqa: E402

BITS = 8  # frame index is written as 8 black/white blocks


def indexed_frames(n: int, height: int = 64, width: int = 96, gray: bool = False) -> np.ndarray:
    """Frames whose pixels carry their own index: bit b of i is block b (white = 1)."""
    frames = np.full((n, height, width), 40, np.uint8)
    block = width // BITS
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, height // 4: 3 * height // 4, b * block: (b + 1) * block] = 215
    return frames if gray else np.repeat(frames[..., None], 3, axis=-1)


def read_index(frame: np.ndarray) -> int:
    """Inverse of ``indexed_frames`` for one decoded (H, W, 3) frame, at any size."""
    h, w = frame.shape[:2]
    block = w / BITS
    row = frame[h // 2, :, 0].astype(int)
    return sum(1 << b for b in range(BITS) if row[int((b + 0.5) * block)] > 127)


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
