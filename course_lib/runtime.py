"""Low-level helpers every layer shares: paths, seeds, usable cores, autocast, device copies and
random states. It imports nothing of the course above it; the choice of device and mode, which
runs a training step to probe the Apple GPU, lives in ``machine`` (above ``methods``).

* **Portability**: ``usable_cpus`` counts the cores this process may use on Linux, macOS
  and Windows alike; paths are ``pathlib`` throughout.
"""
from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import random
from pathlib import Path

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from .settings import SettingError

PACKAGE_DIR = Path(__file__).resolve().parent
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# autocast dtype per device type: bf16 on CUDA; fp32 (no autocast) on MPS and the CPU. On a CPU with bf16
# units (AVX512-BF16) bf16 ran the course's training step 1.4-3x faster, but oneDNN's bf16 weight gradient of a
# 3D convolution on small maps (2 x 4 x 4) was wrong and sometimes NaN in torch 2.14.1 (README, "Measured
# performance"), so the CPU keeps fp32
AUTOCAST = {"cuda": torch.bfloat16}


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


def dataset_override() -> Path | None:
    """The prepared dataset the notebooks train on instead of the built-in one: ``$COURSE_DATASET``
    (a manifest file, or the folder holding ``manifest.jsonl``), or None."""
    value = os.environ.get("COURSE_DATASET", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / "manifest.jsonl"
    if not path.is_file():
        raise SettingError(f"COURSE_DATASET={value}: no manifest there; make one with `python -m course_lib prepare` "
                           f"(data/README.md), or unset COURSE_DATASET for the built-in dataset.")
    return path.resolve()


def usable_cpus() -> int:
    """The CPU cores this process may run on: its affinity where the OS has one (Linux; Python
    3.13's ``process_cpu_count`` elsewhere too), else every core (macOS, Windows)."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        n = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):  # Linux
        n = len(os.sched_getaffinity(0))
    else:
        n = os.cpu_count()
    return max(1, n or 1)


def default_workers(cap: int = 8) -> int:
    """Worker processes for a pool (dataset generation, preparation): the usable cores, at most ``cap``."""
    return min(usable_cpus(), cap)


def worker_pool(workers: int, preload: tuple[str, ...] = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes that start clean, never forked from this process: by the start method the
    program chose (spawn on a Mac or under Windows), else from a fork server where the platform has one (Linux),
    else by spawn. A forked worker inherits this process's FFmpeg state, and freeing a swscale context whose thread
    pool lives in the parent deadlocks it (seen in CI: the two workers writing a dataset's videos waited forever
    in ``avpriv_slicethread_free``). ``preload``: modules a fork server imports once, not in every worker."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "fork"):
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(list(preload))
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def autocast(device: torch.device, enabled: bool = True):
    """The mixed-precision context of a training or inference step on ``device`` (``AUTOCAST``)."""
    dtype = AUTOCAST.get(device.type)
    if not (enabled and dtype is not None):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def full_precision(*tensors: torch.Tensor):
    """Leave autocast for code that needs float32 (augmentation, losses) on the tensors' device."""
    device = next((t.device.type for t in tensors if torch.is_tensor(t)), "cpu")
    with torch.autocast(device, enabled=False):
        yield


def rng_state(device: torch.device) -> dict:
    """The random state of the CPU and of ``device`` (CUDA or MPS), for checkpoints."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what ``rng_state`` saved (a device's entry only on that device type)."""
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    if "mps" in state and device.type == "mps":
        torch.mps.set_rng_state(state["mps"].cpu())


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a GPU (CUDA or MPS); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def send(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``, without waiting for a CUDA device (``non_blocking``; a host tensor that is not
    pinned is staged by CUDA before the call returns, so it may be freed at once). Other devices copy
    before returning: an MPS copy that has not run yet may read host memory already freed."""
    device = torch.device(device)
    return t.to(device, non_blocking=device.type == "cuda")


def device_constant(make):
    """Cache a constant tensor per device and dtype: ``make(*args)`` builds it on the host once, and
    ``f(*args, device, dtype)`` returns it there (do not change it in place), so a step copies nothing to
    the device. It is built outside inference mode, where it could not be saved for a backward pass."""
    @functools.lru_cache(maxsize=64)
    def on(*args):
        *args, device, dtype = args
        with torch.inference_mode(False):
            return send(make(*args).to(dtype), device)

    return functools.wraps(make)(on)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
