"""The learner's blanks and their checks: ``check("info_nce", my_info_nce)`` in a notebook.

A notebook's exercise comes in three cells (nbgrader's pattern): the **blank**, a function's
signature and docstring whose body raises ``NotImplementedError("write this")``; the **check**,
one line that runs the learner's function against ``course_lib``'s on small inputs and says
"correct" or what differs, never the expected values; the **solution**, a collapsed cell that
defines the function and checks it again. Each exercise is registered here once, with its
reference and its inputs, so the check cell, the solution and the tests all use the same ones.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Exercise:
    reference: Callable  # course_lib's answer
    cases: Callable[[], list[tuple]]  # the inputs, each a tuple of positional arguments (made afresh each call)
    hint: str = ""  # said when the answer differs
    outcome: Callable | None = None  # (fn, args) -> what is compared; default: fn(*args)


@dataclass(frozen=True)
class Verdict:
    """A check's outcome: ``ok`` True (correct), False (differs) or None (not written yet), and its message."""

    ok: bool | None
    message: str

    def __bool__(self) -> bool:
        return bool(self.ok)


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, cases: Callable[[], list[tuple]], hint: str = "", outcome: Callable | None = None):
    """Decorator: register the reference function of exercise ``name`` with its inputs (``outcome``: what of a
    call is compared, when it is more than the return value, e.g. the weights after a training step)."""
    def add(fn):
        if name in EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        EXERCISES[name] = Exercise(fn, cases, hint, outcome)
        return fn
    return add


def _describe(x: Any) -> str:
    if torch.is_tensor(x) or isinstance(x, np.ndarray):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _difference(got: Any, want: Any, atol: float, rtol: float) -> str | None:
    """Why ``got`` is not ``want`` (types, shapes, values), or None when they agree; never ``want``'s values."""
    if isinstance(want, dict):
        for key, w in want.items():
            if why := _difference(got.get(key) if isinstance(got, dict) else got, w, atol, rtol):
                return f"{key}: {why}"
        return None
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"it returns {_describe(got)}, not a sequence of {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            if why := _difference(g, w, atol, rtol):
                return f"item {i}: {why}"
        return None
    if torch.is_tensor(want) or isinstance(want, np.ndarray):
        if not (torch.is_tensor(got) or isinstance(got, np.ndarray)):
            return f"it returns {_describe(got)}, expected a {type(want).__name__}"
        g, w = torch.as_tensor(np.asarray(got) if isinstance(got, np.ndarray) else got), torch.as_tensor(
            np.asarray(want) if isinstance(want, np.ndarray) else want)
        if tuple(g.shape) != tuple(w.shape):
            return f"it returns shape {tuple(g.shape)}, expected shape {tuple(w.shape)}"
        if g.dtype.is_floating_point != w.dtype.is_floating_point:
            return f"it returns dtype {g.dtype}, expected a {'float' if w.dtype.is_floating_point else 'integer'} dtype"
        g, w = g.detach().double().cpu(), w.detach().double().cpu()
        bad = ~torch.isclose(g, w, atol=atol, rtol=rtol, equal_nan=True)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            return (f"{int(bad.sum())} of {bad.numel()} values differ, by up to {float((g - w).abs().max()):.3g} "
                    f"(the first at index {first})" if w.ndim else f"it differs by {float((g - w).abs()):.3g}")
        return None
    if isinstance(want, (int, float)):
        if not isinstance(got, (int, float)) and not (torch.is_tensor(got) and got.numel() == 1):
            return f"it returns {_describe(got)}, expected a number"
        got = float(got)
        return None if math.isclose(got, want, abs_tol=atol, rel_tol=rtol) else f"it differs by {abs(got - want):.3g}"
    return None if got == want else f"it returns {got!r}, which is not the expected value"


def check(name: str, mine: Callable, *, atol: float = 1e-5, rtol: float = 1e-4, quiet: bool = False) -> Verdict:
    """Run the learner's ``mine`` against exercise ``name``'s reference on every one of its inputs; print and
    return the verdict: "correct", what differs on which input, or "not written yet"."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; the course's exercises: {', '.join(EXERCISES)}.")
    ex = EXERCISES[name]
    outcome = ex.outcome or (lambda fn, args: fn(*args))
    verdict = Verdict(True, f"{name}: correct on all inputs")
    for i, (args, own) in enumerate(zip(ex.cases(), ex.cases())):  # the same inputs twice: a call may change them
        torch.manual_seed(i)
        want = outcome(ex.reference, args)
        torch.manual_seed(i)
        try:
            got = outcome(mine, own)
        except NotImplementedError:
            verdict = Verdict(None, f"{name}: not written yet. Fill in the blank above (the solution is in the "
                                    f"collapsed cell below).")
            break
        except Exception as e:  # the learner's error, said in one line
            verdict = Verdict(False, f"{name}: raised {type(e).__name__}: {e} (input {i + 1})")
            break
        if why := _difference(got, want, atol, rtol):
            verdict = Verdict(False, f"{name}: not yet. On input {i + 1}, {why}." + (f" Hint: {ex.hint}"
                                                                                       if ex.hint else ""))
            break
    if not quiet:
        print(verdict.message)
    return verdict


# ----------------------------------------------------------------------------- notebook 01
def _video_cases() -> list[tuple]:
    from .video import write_video
    folder = Path(tempfile.mkdtemp(prefix="course-exercise-"))
    frames = np.zeros((48, 32, 48, 3), np.uint8)
    for t in range(48):  # a bright square that moves one pixel per frame: every frame differs
        frames[t, 8:20, t % 36: t % 36 + 12] = 220
    path = write_video(folder / "moving.mp4", frames, keyframe_interval=12)
    return [(path, [20, 21, 22, 23]), (path, [0, 13, 13, 40]), (path, [47, 5])]


@exercise("naive_decode", _video_cases, hint="keep the frames in the order asked for, repeats included.")
def _naive_decode(path, indices):
    from .video import decode_from_start
    return decode_from_start(path, indices)


# ----------------------------------------------------------------------------- notebook 04
def _embedding_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g), 0.1),
            (torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), 0.5),
            (torch.randn(10, 4, generator=g) * 5, torch.randn(10, 4, generator=g), 0.07)]


@exercise("info_nce", _embedding_cases, hint="normalise both inputs, and the positives sit on the diagonal.")
def _info_nce(q, k, t):
    from .losses import info_nce
    return info_nce(q, k, t, symmetric=False)


@exercise("nt_xent", _embedding_cases, hint="2N candidates per view: mask each view itself, its pair is i <-> i + N.")
def _nt_xent(z1, z2, t):
    from .losses import nt_xent
    return nt_xent(z1, z2, t)


def _step_cases() -> list[tuple]:
    from .methods import build_method
    from .models import create_model
    cases = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        simclr = build_method("simclr", create_model("r3d_vcop", width=0.125), size=32, temperature=0.1)
        g = torch.Generator().manual_seed(seed)
        batch = {"clips": torch.randint(0, 256, (4, 2, 3, 8, 36, 36), dtype=torch.uint8, generator=g)}
        cases.append((simclr, batch, torch.optim.AdamW(simclr.parameters(), lr=1e-3, weight_decay=0.05)))
    return cases


def _after_the_step(fn, args):
    """A training step's loss and the weights it leaves."""
    loss = fn(*args)
    return {"loss": loss, "the weights after the step": torch.cat([p.detach().flatten() for p in args[0].parameters()])}


@exercise("training_step", _step_cases, outcome=_after_the_step,
          hint="augment clip 0, then clip 1 (the random draws come in that order); zero the gradients before "
               "backward.")
def _training_step(simclr, batch, optimizer):
    from .train import train_step
    return train_step(simclr, batch, optimizer)[0]


# ----------------------------------------------------------------------------- notebook 07
def _shuffle_cases() -> list[tuple]:
    from .methods.dualvar import shuffle_segments
    g = torch.Generator().manual_seed(3)
    x = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(4, 1, 8, 1, 1).contiguous()  # frame t holds t
    y = torch.rand(3, 2, 12, 2, 2, generator=g)
    return [(x, shuffle_segments(x, 2, g)[1]), (y, shuffle_segments(y, 3, g)[1]), (y, shuffle_segments(y, 4, g)[1])]


@exercise("shuffle_segments", _shuffle_cases, hint="shuffled segment k is original segment perm[b, k].")
def _shuffle(x, perm):
    from einops import rearrange
    parts = rearrange(x, "b c (s l) h w -> b s c l h w", s=perm.shape[1])
    return rearrange(parts[torch.arange(len(x))[:, None], perm], "b s c l h w -> b c (s l) h w")


def _rank_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    anchor = F.normalize(torch.tensor([[[1.0, 0.1], [0.1, 1.0]]]), dim=2)
    a, b = (F.normalize(torch.randn(4, 3, 8, generator=g), dim=2) for _ in range(2))
    return [(anchor, anchor, 0.05, 5.0), (anchor, anchor.flip(1), 0.05, 5.0), (a, b, 0.05, 5.0), (a, b, 0.5, None)]


@exercise("shuffle_rank", _rank_cases, hint="the 2S x 2S matrix of segment similarities; each row's positive is its "
                                              "twin in the other clip, its negatives all the others but itself.")
def _shuffle_rank(anchor, back, theta, cap):
    from .losses import shuffle_rank
    return shuffle_rank(anchor, back, theta, cap=cap)
