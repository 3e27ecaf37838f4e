"""Paths, quick mode, device and seeds: the set-up every notebook and command shares."""
from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path | None:
    """The course repository (the folder with pyproject.toml next to course_lib/), if any."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() and (root / "notebooks").is_dir() else None


def data_dir() -> Path:
    """Where generated and prepared data lives: $COURSE_DATA, else <repo>/data, else ~/.cache."""
    if os.environ.get("COURSE_DATA"):
        return Path(os.environ["COURSE_DATA"]).expanduser()
    root = repo_root()
    return root / "data" if root else Path.home() / ".cache" / "course_lib"


def quick_mode() -> bool:
    """True when COURSE_QUICK=1, or when CI is set and COURSE_QUICK is not 0."""
    flag = os.environ.get("COURSE_QUICK", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def get_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given, else CUDA when available, else CPU."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Setup:
    """What the first cell of every notebook returns."""

    seed: int
    quick: bool
    device: torch.device
    data: Path
    root: Path | None

    @property
    def runs(self) -> Path:
        """Where notebooks cache trained runs; quick and full mode keep separate caches."""
        return self.data / "runs" / ("quick" if self.quick else "full")

    def __str__(self) -> str:
        gpu = torch.cuda.get_device_name(0) if self.device.type == "cuda" else "none"
        return (
            f"course_lib set-up: quick mode {'ON' if self.quick else 'off'} | device {self.device}"
            f" (GPU: {gpu}) | torch {torch.__version__} | python {platform.python_version()}"
            f" | {os.cpu_count()} CPU cores | data in {self.data}"
        )


def setup(seed: int = 0, device: str | None = None) -> Setup:
    """Seed everything, pick the device and quick mode, and resolve the data folder."""
    seed_everything(seed)
    s = Setup(seed=seed, quick=quick_mode(), device=get_device(device), data=data_dir(), root=repo_root())
    print(s)
    return s
