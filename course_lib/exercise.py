"""The learner's blanks and their checks: ``check("info_nce", my_info_nce)`` in a notebook.

A notebook's exercise comes in three cells (nbgrader's pattern): the **blank**, a function's
signature and docstring whose body raises ``NotImplementedError("write this")``; the **check**,
one line that runs the learner's function against ``course_lib``'s on small inputs and says
"correct" or what differs, never the expected values; the **solution**, a collapsed cell that
defines the function and checks it again. Each exercise is registered here once, with its
reference and its inputs, so the check cell, the solution and the tests all use the same ones.
"""
from __future__ import annotations

import functools
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
@functools.cache
def _moving_video() -> Path:
    """A small video, written once per process: a bright square that moves one pixel per frame."""
    from .video import write_video
    frames = np.zeros((48, 32, 48, 3), np.uint8)
    for t in range(48):  # every frame differs
        frames[t, 8:20, t % 36: t % 36 + 12] = 220
    return write_video(Path(tempfile.mkdtemp(prefix="course-exercise-")) / "moving.mp4", frames, keyframe_interval=12)


def _video_cases() -> list[tuple]:
    path = _moving_video()
    return [(path, [20, 21, 22, 23]), (path, [0, 13, 13, 40]), (path, [47, 5])]


@exercise("naive_decode", _video_cases, hint="keep the frames in the order asked for, repeats included.")
def _naive_decode(path, indices):
    from .video import decode_from_start
    return decode_from_start(path, indices)


# ----------------------------------------------------------------------------- notebook 02
@exercise("midplanes", lambda: [(64, 64), (3, 45), (128, 256), (512, 512)],
          hint="solve t d^2 N_in N_out = M (d^2 N_in + t N_out) for M, with t = d = 3, and round down.")
def _midplanes(n_in, n_out):
    from .models.resnet3d import _midplanes
    return _midplanes(n_in, n_out)


# ----------------------------------------------------------------------------- a method's forward
def _small(name: str, seed: int, clips: int, frames: int = 8, videos: int = 4, **options):
    """(method ``name`` around a tiny r3d_vcop at 32 px, a batch of ``videos`` videos with ``clips`` clips of 36 px,
    each with its row of a 12-video training set)."""
    from .methods import build_method
    from .models import create_model
    torch.manual_seed(seed)
    method = build_method(name, create_model("r3d_vcop", width=0.125), size=32, num_videos=12, **options)
    g = torch.Generator().manual_seed(seed)
    batch = {"clips": torch.randint(0, 256, (videos, clips, 3, frames, 36, 36), dtype=torch.uint8, generator=g),
             "index": torch.randperm(12, generator=g)[:videos]}
    return method, batch


def _forward_after(fn, args):
    """A forward pass's loss, the gradients it gives every trainable weight, and the state it leaves (queues,
    memory banks, momentum encoders, BatchNorm statistics)."""
    method = args[0]
    loss = fn(*args)
    if not torch.is_tensor(loss) or loss.numel() != 1:
        raise TypeError(f"it returns {_describe(loss)}, not the loss (a tensor holding one number)")
    if not loss.requires_grad:
        raise TypeError("the loss it returns carries no gradient (detached, or computed under torch.no_grad)")
    loss.backward()
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
             for p in method.parameters() if p.requires_grad]
    state = [b.detach().float().flatten() for b in method.buffers()] + [
        p.detach().flatten() for p in method.parameters() if not p.requires_grad]
    return {"the loss": loss.detach(), "the gradients of the trainable weights": torch.cat(grads),
            "the state after the pass (queue, memory bank, momentum encoder, BatchNorm statistics)":
                torch.cat(state) if state else torch.zeros(0)}


# ----------------------------------------------------------------------------- notebook 03
def _rotate_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 4, 8, 8), dtype=torch.uint8, generator=g)
    return [(x, torch.tensor([1, 0, 3])), (x[:1], torch.tensor([2])), (x.float() / 255, torch.tensor([3, 2, 1]))]


@exercise("rotate", _rotate_cases, hint="each clip turns by its own k[i]; torch.rot90 turns the last two axes.")
def _rotate(clips, k):
    from .methods.rotation import rotate
    return rotate(clips, k)


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


def _moco_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    queue = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    return [(torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), queue, 0.07),
            (torch.randn(2, 8, generator=g) * 3, torch.randn(2, 8, generator=g), queue[:5], 0.2)]


@exercise("moco_loss", _moco_cases, hint="normalise q and k; the logits are the positive q . k first, then q "
                                           "against every queued key, all over the temperature; the target is 0.")
def _moco_loss(q, k, queue, t):
    from .losses import moco_loss
    return moco_loss(q, k, queue, t)


@exercise("moco_forward", lambda: [_small("moco", seed, 2, videos=8, queue=8, momentum=0.9) for seed in (0, 1)],
          outcome=_forward_after,
          hint="augment clip 0 then clip 1; query and keys go through model.grouped (the keys shuffled); update the "
               "key encoder before it embeds the keys; the loss against a copy of the queue, then enqueue the keys.")
def _moco_forward(moco, batch):
    return moco(batch)[0]


# ----------------------------------------------------------------------------- notebook 05
def _residual_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(2, 3, 6, 5, 5, generator=g),), (torch.rand(1, 3, 2, 4, 4, generator=g),)]


@exercise("residual_frames", _residual_cases, hint="frame t minus frame t - 1, the first frame against the last "
                                                     "(torch.roll), then (d + 1) / 2.")
def _residual(x):
    from .augment import residual_frames
    return residual_frames(x)


def _bank_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    n, d = 50, 32
    banks = [F.normalize(torch.randn(n, d, generator=g), dim=1) for _ in range(2)]
    index = torch.tensor([3, 14, 15, 9])
    cand = torch.cat([index[:, None], torch.randint(0, n, (4, 16), generator=g)], 1)
    return [(F.normalize(torch.randn(4, d, generator=g), dim=1), banks[0], banks[1], cand, 0.07),
            (F.normalize(torch.randn(4, d, generator=g), dim=1), banks[1], banks[0], cand[:, :5], 0.2)]


@exercise("iic_nce", _bank_cases, hint="candidates: the other view's bank at cand (own video first), then the "
                                         "intra-negative bank at cand; logits q . c / t; the positive is column 0.")
def _iic_nce(q, other_bank, intra_bank, cand, t):
    from .losses import bank_nce
    return bank_nce(q, torch.cat([other_bank[cand], intra_bank[cand]], 1), t)[0]


@exercise("iic_forward", lambda: [_small("iic", seed, 1, negatives=5) for seed in (0, 1)], outcome=_forward_after,
          hint="draw the candidates before the intra-negative's frame (the random draws come in that order); the "
               "clip's own intra-negative replaces column 0 of the intra bank's candidates; update the banks last.")
def _iic_forward(iic, batch):
    return iic(batch)[0]


# ----------------------------------------------------------------------------- notebook 06
@exercise("interval_pmf", lambda: [(10, "decreasing", 1.0), (200, "decreasing", 2.0), (7, "uniform", 1.0),
                                   (50, "increasing", 0.5)],
          hint="weights 1 - (t / M)^p (decreasing), 1 (uniform) or (t / M)^p (increasing) for t = 0 .. M - 1, "
               "divided by their sum.")
def _interval(num_starts, mode, power):
    from .data.samplers import interval_pmf
    return interval_pmf(num_starts, mode, power)


@exercise("cvrl_forward", lambda: [_small("cvrl", seed, 2, hidden=64) for seed in (0, 1)], outcome=_forward_after,
          hint="clip 0 through augment1, clip 1 through augment2; NT-Xent summed over its two directions "
               "(reduction=\"sum\").")
def _cvrl_forward(cvrl, batch):
    return cvrl(batch)[0]


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


def _coherent_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(1)
    e = [F.normalize(torch.randn(3, 2, 16, generator=g), dim=2) for _ in range(2)]
    f = [F.normalize(torch.randn(5, 4, 8, generator=g), dim=2) for _ in range(2)]
    return [(e[0], e[1], 0.07), (f[0], f[1], 0.2)]


@exercise("temporal_coherent", _coherent_cases, hint="two clips' similarity is the mean of their S x S segment dot "
                                                       "products; then NT-Xent over the 2N clips, never a clip itself.")
def _coherent(e1, e2, t):
    from .losses import temporal_coherent
    return temporal_coherent(e1, e2, t)


@exercise("dualvar_forward", lambda: [_small("dualvar", seed, 2, reverse=p) for seed, p in ((0, 0.5), (1, 0.0))],
          outcome=_forward_after,
          hint="draw the reverse coin first (only when reverse is not 0), then augment c1, c2 and c1 again; the "
               "three views go through the backbone as one batch; the shuffled copy through it on its own.")
def _dualvar_forward(dualvar, batch):
    return dualvar(batch)[0]


# ----------------------------------------------------------------------------- notebook 08
def _ema_cases() -> list[tuple]:
    from torch import nn
    cases = []
    for seed, m in ((0, 0.99), (1, 0.5), (2, 0.0)):
        torch.manual_seed(seed)
        online, target = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)), nn.Sequential(nn.Linear(4, 6),
                                                                                        nn.BatchNorm1d(6))
        online(torch.randn(8, 4))  # the online BatchNorm's running statistics move
        cases.append((target, online, m))
    return cases


def _target_after(fn, args):
    """An EMA update's result: every parameter and buffer of the target."""
    with torch.no_grad():
        fn(*args)
    return {"the target's weights": torch.cat([p.detach().flatten() for p in args[0].parameters()]),
            "the target's BatchNorm statistics": torch.cat([b.detach().float().flatten() for b in args[0].buffers()])}


@exercise("momentum_update", _ema_cases, outcome=_target_after,
          hint="each target weight moves to m * target + (1 - m) * online; buffers (BatchNorm statistics) are copied.")
def _momentum_update(target, online, m):
    from .losses import momentum_update
    momentum_update(target, online, m)


def _byol_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)),
            (torch.randn(4, 3, 6, generator=g), torch.randn(4, 3, 6, generator=g))]


@exercise("byol_loss", _byol_cases, hint="2 - 2 cos(p_i, z_j) for every ordered pair of different clips i != j, "
                                           "averaged over the videos and the pairs, times rho.")
def _byol(p, z):
    from .losses import byol_loss
    return byol_loss(p, z)


@exercise("byol_forward", lambda: [_small("byol", seed, rho, rho=rho, hidden=64, momentum=0.9)
                                   for seed, rho in ((0, 2), (1, 3))],
          outcome=_forward_after,
          hint="one pass per clip, online and target alike; update the target before it embeds the clips, with no "
               "gradient.")
def _byol_forward(byol, batch):
    return byol(batch)[0]


# ----------------------------------------------------------------------------- notebook 09
def _tube_cases() -> list[tuple]:
    return [(4, (4, 6, 6), 0.9), (2, (2, 4, 5), 0.75), (3, (8, 4, 4), 0.5)]


def _tube_properties(fn, args):
    """What a tube mask must be (its draw is random): shape, and in every frame the same patches, as many as asked."""
    batch, (t, h, w), ratio = args
    m = fn(*args, torch.Generator().manual_seed(0))
    if not torch.is_tensor(m) or tuple(m.shape) != (batch, t * h * w):
        return {"the mask": m}
    frames = m.reshape(batch, t, h * w).bool()
    return {"the mask's shape": torch.tensor(m.shape), "the same patches at every time step":
            torch.tensor(bool((frames == frames[:, :1]).all())),
            "patches hidden per frame": frames.sum(2)}


@exercise("tube_mask", _tube_cases, outcome=_tube_properties,
          hint="draw int(ratio * h * w) of the h * w patches per clip, then repeat that frame over the t time steps.")
def _tube(batch, grid, ratio, g):
    from .methods.masking import tube_mask
    return tube_mask(batch, grid, ratio, g)


# ----------------------------------------------------------------------------- notebook 10
def _retrieval_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 8, generator=g), torch.randn(12, 8, generator=g)
    ya, yb = torch.randint(0, 4, (30,), generator=g), torch.randint(0, 4, (12,), generator=g)
    return [(a, ya, b, yb, k) for k in (1, 5)] + [(a * 10, ya, b, yb, 3)]


@exercise("recall_at_k", _retrieval_cases, hint="cosine similarity of every test feature to every training one; a "
                                                  "hit when any of the k nearest shares the label; in %.")
def _recall(train_f, train_y, test_f, test_y, k):
    from .evaluate import retrieval
    return retrieval(train_f, train_y, test_f, test_y, ks=(k,))[f"R@{k}"]
