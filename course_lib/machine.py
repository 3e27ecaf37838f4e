"""This machine: its device, the mode that fits it, and the set-up every notebook runs first.

* **Device**: CUDA when present; else Apple's MPS when present and it runs what a training
  step needs (``device_problem``); else the CPU.
* **Mode**, the budget the notebooks and the command line run (``course.BUDGETS``): ``COURSE_MODE``
  names it (``test``, ``cpu`` or ``full``; ``COURSE_QUICK=1`` or ``0`` is short for ``cpu`` or
  ``full``); else ``test`` under ``CI``; else the machine decides: ``cpu`` without a GPU, ``full``
  with one.

It sits above ``methods`` and ``models``, since the Apple-GPU probe trains a tiny SimCLR step.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .augment import residual_frames
from .methods import build_method
from .models import create_model
from .runtime import FALSE, TRUE, data_dir, dataset_override, repo_root, seed_everything, usable_cpus
from .settings import SettingError


# ---------------------------------------------------------------- device
def mps_available() -> bool:
    """Whether this is a Mac with an Apple GPU that PyTorch can use (``torch.backends.mps``)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _training_step(device: torch.device) -> None:
    """One tiny SimCLR step (uint8 clips, on-device augmentation with grid_sample, conv3d, BatchNorm,
    NT-Xent, backward) and the other ops the methods use (max-pool 3D, residual frames, top-k)."""
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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU ({platform.machine()})"
    return platform.processor() or platform.machine() or "CPU"


# ---------------------------------------------------------------- mode
MODES = ("test", "cpu", "full")  # the course's budgets, smallest first (course.BUDGETS)
MEANING = {
    "test": "the test budget: a smoke test of the code, its numbers are not results",
    "cpu": "the CPU default: small enough for a laptop, big enough that learning shows",
    "full": "the course budget: the reference results were measured at it",
}
DATA_PRESET = {"test": "quick", "cpu": "default", "full": "default"}  # each mode's built-in dataset (data.synth.PRESETS)


@dataclass(frozen=True)
class Mode:
    """The budget in use (``test``, ``cpu`` or ``full``), and why."""

    name: str
    reason: str
    by_machine: bool = False  # chosen from the hardware, not forced by COURSE_MODE, COURSE_QUICK or CI

    @property
    def quick(self) -> bool:
        """Whether a budget smaller than the course's is running (its runs are shorter than the reference's)."""
        return self.name != "full"

    def note(self) -> str:
        """One line: the mode, why, and how to change it."""
        others = " or ".join(m for m in MODES if m != self.name)
        return f"{self.name} mode ({MEANING[self.name]}), because {self.reason}; set COURSE_MODE={others} to change it"


def course_mode() -> Mode:
    """``COURSE_MODE`` if set (``COURSE_QUICK=1`` or ``0``: cpu or full); else test under ``CI``; else cpu without
    a GPU and full with one."""
    named = os.environ.get("COURSE_MODE", "").strip().lower()
    if named:
        if named not in MODES:
            raise SettingError(f"COURSE_MODE={os.environ['COURSE_MODE']!r} is not allowed: use {', '.join(MODES)}, "
                               f"or leave it unset to let the machine decide.")
        return Mode(named, f"COURSE_MODE={named} is set")
    flag = os.environ.get("COURSE_QUICK", "").strip().lower()
    if flag in TRUE:
        return Mode("cpu", "COURSE_QUICK=1 is set")
    if flag in FALSE:
        return Mode("full", "COURSE_QUICK=0 is set")
    if flag:
        raise SettingError(f"COURSE_QUICK={os.environ['COURSE_QUICK']!r} is not allowed: use 1 (cpu mode), "
                           f"0 (full mode), or leave it unset to let the machine decide.")
    if os.environ.get("CI", "").strip().lower() not in ("", *FALSE):
        return Mode("test", "CI is set")
    device = get_device()
    if device.type != "cpu":
        return Mode("full", f"a GPU was found: {device_name(device)}", by_machine=True)
    return Mode("cpu", "no GPU was found (CUDA or Apple MPS), and full mode takes hours on a CPU", by_machine=True)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ``MODES``, else a one-line error."""
    if mode not in MODES:
        raise SettingError(f"mode {mode!r} is not one of {', '.join(MODES)}.")
    return mode


def quick_mode() -> bool:
    """Whether a budget smaller than the course's runs (``course_mode``: test or cpu)."""
    return course_mode().quick


def small_data(mode: str) -> bool:
    """Whether ``mode`` trains on the small built-in dataset (``DATA_PRESET``)."""
    return DATA_PRESET[check_mode(mode)] == "quick"


def runs_root(mode: str, dataset: Path | None = None, data: Path | None = None) -> Path:
    """Where trained runs are cached: ``<data>/runs/<mode>``; each prepared dataset (``$COURSE_DATASET``, read
    when ``dataset`` is not given) keeps its own cache beside them."""
    dataset = dataset_override() if dataset is None else dataset
    name = check_mode(mode)
    if dataset is not None:  # the folder's name and a hash of its full path
        tag = hashlib.sha1(str(dataset).encode("utf-8")).hexdigest()[:8]
        name += f"-{dataset.parent.name}-{tag}"
    return (data or data_dir()) / "runs" / name


@dataclass(frozen=True)
class Setup:
    """What the first cell of every notebook returns."""

    seed: int
    mode: str  # the budget in use: "test", "cpu" or "full"
    device: torch.device
    data: Path
    root: Path | None
    mode_reason: str = ""
    dataset: Path | None = None  # $COURSE_DATASET's manifest; None: the built-in dataset

    @property
    def quick(self) -> bool:
        """Whether a budget smaller than the course's runs (test or cpu): loops and figures shrink with it."""
        return self.mode != "full"

    @property
    def builtin(self) -> bool:
        """Whether the notebooks train on the built-in dataset (cells about its recorded attributes need it)."""
        return self.dataset is None

    @property
    def runs(self) -> Path:
        """Where notebooks cache trained runs (``runs_root``)."""
        return runs_root(self.mode, self.dataset, self.data)

    def __str__(self) -> str:
        gpu = device_name(self.device) if self.device.type != "cpu" else "none"
        others = " or ".join(m for m in MODES if m != self.mode)
        return (
            f"course_lib set-up: device {self.device} (GPU: {gpu}) | torch {torch.__version__}"
            f" | python {platform.python_version()} | {platform.system()} | {usable_cpus()} CPU cores"
            f" | data in {self.data}\n"
            f"mode: {self.mode.upper()}, {MEANING[self.mode]}; because {self.mode_reason}. To change it, set"
            f" COURSE_MODE={others} before starting Jupyter (or run `%env COURSE_MODE=...` before this cell).\n"
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
    s = Setup(seed=seed, mode=mode.name, device=dev, data=data_dir(), root=repo_root(), mode_reason=mode.reason,
              dataset=dataset_override())
    print(s)
    return s
