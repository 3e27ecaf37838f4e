"""Paths, mode, device and seeds: the set-up every notebook and command shares.

* **Device**: CUDA when present; else Apple's MPS when present and it runs what a training
  step needs (``device_problem``); else the CPU.
* **Mode**: ``COURSE_QUICK=1`` or ``0`` forces quick or full mode; ``CI`` means quick;
  otherwise the machine decides: quick without a GPU, full with one.
* **Portability**: ``usable_cpus`` counts the cores this process may use on Linux, macOS
  and Windows alike; paths are ``pathlib`` throughout.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import random
import sys
from dataclasses import dataclass
from pathlib import Path

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


# ---------------------------------------------------------------- device
def mps_available() -> bool:
    """Whether this is a Mac with an Apple GPU that PyTorch can use (``torch.backends.mps``)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _training_step(device: torch.device) -> None:
    """One tiny SimCLR step (uint8 clips, on-device augmentation with grid_sample, conv3d, BatchNorm,
    NT-Xent, backward) and the other ops the methods use (max-pool 3D, residual frames, top-k)."""
    from .augment import residual_frames
    from .methods import build_method
    from .models import create_model

    method = build_method("simclr", create_model("r3d_vcop", width=0.125), size=16).to(device)
    clips = torch.randint(0, 256, (2, 2, 3, 4, 18, 18), dtype=torch.uint8, device=device)
    loss, _ = method({"clips": clips, "index": torch.arange(2, device=device)})
    loss.backward()
    x = residual_frames(torch.rand(1, 3, 4, 8, 8, device=device))
    torch.nn.functional.max_pool3d(x, 2).topk(1, dim=1)


@functools.lru_cache(maxsize=None)
def device_problem(name: str) -> str | None:
    """None if a training step runs on device ``name``, else why not (one line). Cached per process.

    The step draws random numbers; the CPU's random state is put back afterwards.
    """
    state = torch.get_rng_state()
    try:
        _training_step(torch.device(name))
    except Exception as e:  # NotImplementedError for a missing MPS op, RuntimeError, ...
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'}"
    finally:
        torch.set_rng_state(state)
    return None


@functools.lru_cache(maxsize=None)
def _mps_usable() -> bool:
    problem = device_problem("mps")
    if problem:  # said once per process
        print(f"course_lib: the Apple GPU (MPS) lacks an op the course needs ({problem}); using the CPU.",
              file=sys.stderr)
    return problem is None


def parse_device(value: str | torch.device) -> torch.device:
    """A device setting as a ``torch.device``: "cpu", "cuda", "cuda:1" or "mps"; anything else is a SettingError."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise SettingError(f"setting device={value!r} is not allowed: use cpu, cuda, cuda:N or mps "
                           f"(or leave it unset to pick one).")
    return device


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """``prefer`` if given, else CUDA when available, else MPS when it runs the course's ops, else the CPU.

    An explicit ``mps`` whose ops fail falls back to the CPU with one line on stderr; an explicit
    ``cuda`` or ``mps`` on a machine without one is a ``SettingError``.
    """
    if prefer:
        device = parse_device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SettingError(f"setting device={prefer!r} is not allowed: this machine has no CUDA GPU "
                               f"(use device=cpu, or leave device unset).")
        if device.type == "mps":
            if not mps_available():
                raise SettingError(f"setting device={prefer!r} is not allowed: this machine has no Apple GPU "
                                   f"(use device=cpu, or leave device unset).")
            return device if _mps_usable() else torch.device("cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available() and _mps_usable():
        return torch.device("mps")
    return torch.device("cpu")


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU ({platform.machine()})"
    return platform.processor() or platform.machine() or "CPU"


# ---------------------------------------------------------------- mode
@dataclass(frozen=True)
class Mode:
    """Quick or full mode, and why."""

    quick: bool
    reason: str
    by_machine: bool = False  # chosen from the hardware, not forced by COURSE_QUICK or CI

    def note(self) -> str:
        """One line: the mode, why, and how to change it."""
        other = "0 (full mode)" if self.quick else "1 (quick mode)"
        return f"{'quick' if self.quick else 'full'} mode, because {self.reason}; set COURSE_QUICK={other} to change it"


def course_mode() -> Mode:
    """``COURSE_QUICK`` (1 or 0) if set; quick if ``CI`` is set; else quick without a GPU, full with one."""
    flag = os.environ.get("COURSE_QUICK", "").strip().lower()
    if flag in TRUE:
        return Mode(True, "COURSE_QUICK=1 is set")
    if flag in FALSE:
        return Mode(False, "COURSE_QUICK=0 is set")
    if flag:
        raise SettingError(f"COURSE_QUICK={os.environ['COURSE_QUICK']!r} is not allowed: use 1 (quick mode), "
                           f"0 (full mode), or leave it unset to let the machine decide.")
    if os.environ.get("CI", "").strip().lower() not in ("", *FALSE):
        return Mode(True, "CI is set")
    device = get_device()
    if device.type != "cpu":
        return Mode(False, f"a GPU was found: {device_name(device)}", by_machine=True)
    return Mode(True, "no GPU was found (CUDA or Apple MPS), and full mode takes hours on a CPU", by_machine=True)


def quick_mode() -> bool:
    """Whether notebooks and commands run in quick mode (``course_mode``)."""
    return course_mode().quick


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
    mode_reason: str = ""
    dataset: Path | None = None  # $COURSE_DATASET's manifest; None: the built-in dataset

    @property
    def builtin(self) -> bool:
        """Whether the notebooks train on the built-in dataset (cells about its recorded attributes need it)."""
        return self.dataset is None

    @property
    def runs(self) -> Path:
        """Where notebooks cache trained runs; quick and full mode, and each COURSE_DATASET, keep separate caches."""
        name = "quick" if self.quick else "full"
        if self.dataset is not None:  # the folder's name and a hash of its full path
            tag = hashlib.sha1(str(self.dataset).encode("utf-8")).hexdigest()[:8]
            name += f"-{self.dataset.parent.name}-{tag}"
        return self.data / "runs" / name

    def __str__(self) -> str:
        gpu = device_name(self.device) if self.device.type != "cpu" else "none"
        mode, other = ("QUICK", "0 (full mode)") if self.quick else ("FULL", "1 (quick mode)")
        return (
            f"course_lib set-up: device {self.device} (GPU: {gpu}) | torch {torch.__version__}"
            f" | python {platform.python_version()} | {platform.system()} | {usable_cpus()} CPU cores"
            f" | data in {self.data}\n"
            f"mode: {mode}, because {self.mode_reason}. To change it, set COURSE_QUICK={other} before"
            f" starting Jupyter (or run `%env COURSE_QUICK={other[0]}` before this cell).\n"
            + (f"dataset: COURSE_DATASET={self.dataset}; cells about the built-in data's attributes are skipped."
               if self.dataset else "dataset: the built-in one (COURSE_DATASET=path/to/manifest.jsonl trains the"
               " notebooks on a prepared dataset instead).")
        )


def setup(seed: int = 0, device: str | None = None) -> Setup:
    """Pick the device and the mode, seed everything, resolve the data folder and the dataset
    (``$COURSE_DATASET`` or the built-in one); print what was chosen and why."""
    dev = get_device(device)
    mode = course_mode()
    seed_everything(seed)
    s = Setup(seed=seed, quick=mode.quick, device=dev, data=data_dir(), root=repo_root(), mode_reason=mode.reason,
              dataset=dataset_override())
    print(s)
    return s
