"""One training loop for supervised training and every self-supervised method.

A *method* is an ``nn.Module`` whose ``forward(batch)`` returns ``(loss, logs)``; the loop
does not know which method it runs. It moves each batch to the device (pinned memory,
non-blocking copies), runs the step under bf16 autocast on CUDA, follows a learning-rate
schedule per step, times every phase of a step with one clock (``phases.PhaseClock``: the
epoch's seconds and its data-wait share come from it), writes one JSON line of metrics per
epoch, and checkpoints atomically at the end of every epoch.

Resuming is exact: an epoch's clips depend only on ``(seed, epoch, index)``, its batch
order on a generator seeded with ``(seed, epoch)``, and the checkpoint holds the model,
optimiser, scheduler and torch RNG state. On the CPU a resumed run ends bit-for-bit
equal to an uninterrupted one (``tests/test_train.py``).

The same function runs every process of a ``torchrun`` launch (see ``train``'s docstring
and ``course_lib.distributed``); switches: ``amp`` (bf16 autocast on CUDA),
``channels_last`` (channels_last_3d memory format), ``compile`` (``torch.compile``).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import distributed
from .phases import PhaseClock, phase_record
from .runtime import autocast, rng_state, seed_everything, send, set_rng_state
from .machine import get_device
from .settings import Checked, flag, int_list, integer, number, one_of
from .video import before_fork

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


OPTIMIZERS = {  # name -> (parameters, TrainConfig) -> optimiser
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                               weight_decay=cfg.weight_decay),
    "adamw": lambda params, cfg: torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, cfg.beta2),
                                                    weight_decay=cfg.weight_decay),
}


def _cosine(step: int, steps_per_epoch: int, cfg: "TrainConfig", warmup: float) -> float:
    """A half cosine from 1 to 0: after the warm-up, or (``cosine_after_warmup=False``, SlowFast's
    ``COSINE_AFTER_WARMUP: False``) over the whole run, the warm-up included."""
    total = cfg.epochs * steps_per_epoch
    offset = warmup if cfg.cosine_after_warmup else 0.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - offset) / max(1, total - offset))))


def _multistep(step: int, steps_per_epoch: int, cfg: "TrainConfig", warmup: float) -> float:
    return cfg.gamma ** sum(step // steps_per_epoch >= m for m in cfg.milestones)


SCHEDULES = {  # name -> (step, steps per epoch, TrainConfig, warm-up steps) -> factor after the warm-up
    "cosine": _cosine,
    "multistep": _multistep,  # lr *= gamma at each of the milestones (epochs)
    "constant": lambda *_: 1.0,
}


@dataclass
class TrainConfig(Checked):
    """How a model trains: every field is checked when set (``RULES``, ``course_lib.settings``)."""

    epochs: int = 10
    batch_size: int = 16  # the global batch under torchrun
    lr: float = 0.01
    optimizer: str = "sgd"  # a key of OPTIMIZERS: "sgd" (momentum) or "adamw"
    momentum: float = 0.9  # SGD
    beta2: float = 0.999  # AdamW's second-moment decay (VideoMAE: 0.95)
    weight_decay: float = 1e-4
    weight_decay_on: str = "all"  # "all" parameters, or "kernels": conv and linear weights only (CVRL's code)
    schedule: str = "cosine"  # a key of SCHEDULES: "cosine", "multistep" or "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    cosine_after_warmup: bool = True  # False: the cosine spans the warm-up too, which ends at its value there (SlowFast)
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr *= gamma
    gamma: float = 0.1
    num_workers: int = 2  # DataLoader worker processes
    seed: int = 0
    amp: bool = True  # mixed precision where runtime.AUTOCAST has a dtype for the device (bf16 on CUDA)
    channels_last: bool = True  # channels_last_3d weights and inputs: faster 3D convolutions (README, "Speed")
    compile: bool = False  # torch.compile the backbone
    steps_per_epoch: int | None = None  # cap, for quick runs
    grad_clip: float | None = None  # clip the gradient norm of each of the method's clip_groups() to this value
    grad_clip_after_warmup: bool = False  # True: clip only once the warm-up is over (jepa's train.py)
    log_every: int = 10  # steps between reads of the logs on the host (the loop's only device syncs)

    RULES = {
        "epochs": integer(1), "batch_size": integer(1), "lr": number(above=0, example="0.001"),
        "optimizer": one_of(lambda: OPTIMIZERS), "momentum": number(0, 1), "beta2": number(0, 1), "weight_decay": number(0), "weight_decay_on": one_of(("all", "kernels")),
        "schedule": one_of(lambda: SCHEDULES), "warmup_epochs": number(0),
        "milestones": int_list(0, example="[120, 160]"), "gamma": number(above=0),
        "num_workers": integer(0), "seed": integer(0, 2 ** 32 - 1), "amp": flag(), "channels_last": flag(),
        "compile": flag(), "steps_per_epoch": integer(1, optional=True), "grad_clip": number(above=0, optional=True),
        "cosine_after_warmup": flag(), "grad_clip_after_warmup": flag(),
        "log_every": integer(1),
    }


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``: linear warm-up, then ``cfg.schedule``."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:  # linear from 0 to the schedule's value at the warm-up's end (1 unless the cosine spans it)
        end = 1.0 if cfg.cosine_after_warmup else SCHEDULES[cfg.schedule](warmup, steps_per_epoch, cfg, warmup)
        return (step + 1) / warmup * end
    return SCHEDULES[cfg.schedule](step, steps_per_epoch, cfg, warmup)


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params``; with ``weight_decay_on="kernels"`` only tensors of two or more
    dimensions (convolution and linear weights) decay, not biases or BatchNorm's scale and shift."""
    params = list(params)
    if cfg.weight_decay_on == "kernels":
        params = [{"params": [p for p in params if p.ndim > 1]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return OPTIMIZERS[cfg.optimizer](params, cfg)


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, closed, then ``os.replace``d over ``path``: a crash never leaves a
    half-written checkpoint, and the rename holds on Windows too (it replaces an existing file, and
    no handle to either file is open during it). A failed save removes its temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes saving at once never share it
    try:
        torch.save(obj, tmp)  # opens, writes and closes tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by ``train`` (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt or foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}).") from None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: send(v, device) if torch.is_tensor(v) else v for k, v in batch.items()}


class EpochBatches(torch.utils.data.Sampler):
    """The batches of every epoch from ``start`` to ``epochs``, for one process of ``world``.

    Epoch e shuffles the dataset with a generator seeded by ``(seed, e)`` and cuts it into
    global batches of ``batch * world`` videos; this process takes its ``batch`` of each, so
    ``world`` processes together see exactly the batches one process with ``batch * world``
    sees. Items are ``(epoch, index)`` keys when ``keyed`` (a ``ClipDataset`` then draws that
    epoch's clips), so one DataLoader, and its worker processes, serve the whole run.
    """

    def __init__(self, n: int, batch: int, steps: int, seed: int, start: int, epochs: int, *, rank: int = 0,
                 world: int = 1, keyed: bool = True):
        self.n, self.batch, self.steps, self.seed = n, batch, steps, seed
        self.start, self.epochs, self.rank, self.world, self.keyed = start, epochs, rank, world, keyed

    def __len__(self) -> int:
        return (self.epochs - self.start) * self.steps

    def __iter__(self):
        for epoch in range(self.start, self.epochs):
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            for step in range(self.steps):
                first = (step * self.world + self.rank) * self.batch
                idx = order[first: first + self.batch].tolist()
                yield [(epoch, i) for i in idx] if self.keyed else idx


def use_channels_last(method: torch.nn.Module) -> None:
    """5-D weights, and the backbone's input, in channels_last_3d (N, T, H, W, C): oneDNN's and cuDNN's
    faster 3D convolutions (on the course's CPU 1.1-1.5x per training step of a 3D CNN; README, "Speed")."""
    method.to(memory_format=torch.channels_last_3d)
    if hasattr(method, "backbone"):
        method.backbone.register_forward_pre_hook(
            lambda _, args: (args[0].contiguous(memory_format=torch.channels_last_3d), *args[1:]))


def _changed_settings(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings in which a checkpoint's config differs from ``cfg`` ("epochs=4 -> 2"); none if it matches.
    The settings that change no number (workers, memory format, compilation) may differ, and a setting added
    to TrainConfig after the checkpoint was written matches when it holds its default (what the code did
    before the setting existed)."""
    free = ("num_workers", "channels_last", "compile", "log_every")
    now = asdict(cfg)
    default = asdict(TrainConfig())
    saved = {**{k: default[k] for k in now.keys() - saved.keys() if k in default}, **saved}
    return [f"{k}={saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(saved.keys() | now.keys())
            if k not in free and saved.get(k) != now.get(k)]


def train_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, *, device=None,
               amp: bool = False, grad_clip: float = 0.0, clip_groups: list | None = None, mark=None):
    """One training step, as ``train`` takes it: the method's forward on ``batch`` (its augmentation, its views, its
    loss; under autocast with ``amp``), then zero the gradients, backpropagate, clip each of ``clip_groups``
    to norm ``grad_clip`` (0: no clipping) and step the optimizer. Returns the forward's (loss, logs).
    ``mark(phase)`` is told where the step is (``PhaseClock.mark``): "backward", then "optimizer"."""
    device = torch.device(device) if device is not None else batch["clips"].device
    with autocast(device, amp):
        loss, logs = model(batch)
    if mark:
        mark("backward")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if mark:
        mark("optimizer")
    if grad_clip:
        for group in clip_groups if clip_groups is not None else [model.parameters()]:
            torch.nn.utils.clip_grad_norm_(group, grad_clip)  # one norm per group (V-JEPA: encoder and predictor)
    optimizer.step()
    return loss, logs


def train(method: torch.nn.Module, dataset, cfg: TrainConfig, out: str | os.PathLike, *, device=None,
          resume: bool = True, progress: bool = True, stop_after_epochs: int | None = None) -> dict:
    """Train ``method`` on ``dataset`` for ``cfg.epochs``; write checkpoint, metrics and summary under ``out``.

    With ``resume=True`` a checkpoint in ``out`` is continued from. ``stop_after_epochs``
    ends the call early (as an interruption would), leaving a resumable checkpoint.
    Returns the summary dict (also written to ``summary.json``).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this with the same
    arguments: ``cfg.batch_size`` is the global batch, split evenly; BatchNorm becomes
    global (``distributed.sync_batchnorm``); the model is wrapped in
    ``DistributedDataParallel``; each process seeds its own augmentations
    (``seed + 100003 * rank``); process 0 alone writes metrics and checkpoints, which
    hold every process's random state so that a resumed run continues each one.
    """
    out = Path(out)
    device = get_device(device)
    ctx = distributed.init(device.type)
    if device.type == "cuda" and ctx.world_size > 1:
        device = torch.device("cuda", ctx.local_rank)
    if device.type == "mps" and ctx.world_size > 1:
        raise ValueError("torchrun on the Apple GPU is not supported (no collective backend takes MPS tensors); "
                         "use device=cpu.")
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
                         f"{ctx.world_size} processes.")
    local_batch = cfg.batch_size // ctx.world_size
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + 100_003 * ctx.rank)
    method.to(device)
    if cfg.channels_last:
        use_channels_last(method)
    if ctx.world_size > 1:
        method = distributed.sync_batchnorm(method, device.type)
    if cfg.compile and hasattr(method, "backbone"):
        method.backbone.compile()  # in place: state-dict keys unchanged
    optimizer = build_optimizer([p for p in method.parameters() if p.requires_grad], cfg)
    steps = len(dataset) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the dataset ({len(dataset)} videos).")
    steps = min(steps, cfg.steps_per_epoch or steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, cfg))
    warmup_steps = cfg.warmup_epochs * steps
    groups = method.clip_groups() if hasattr(method, "clip_groups") else [method.parameters()]
    clip_groups = [[p for p in group if p.requires_grad] for group in groups]
    start_epoch, history = 0, []
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        changed = _changed_settings(state["config"], cfg)
        if changed:  # e.g. a course budget changed since the run was cached
            raise ValueError(f"{ckpt_path}: was written with another training config ({', '.join(changed)}); use a "
                             f"new --out, delete the folder, or resume=False.")
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"] if isinstance(state["rng"], list) else [{"cpu": state["rng"]}]
        if len(rng) == ctx.world_size:  # the same number of processes: each continues its own stream
            set_rng_state(rng[ctx.rank], device)
        start_epoch, history = state["epoch"], state["history"]
    elif ckpt_path.exists() and ctx.is_main:
        ckpt_path.unlink()
        (out / METRICS).unlink(missing_ok=True)
    distributed.barrier()  # nobody starts before process 0 has cleared an old run
    model = method
    if ctx.world_size > 1:
        model = distributed.wrap_ddp(method, device)
    keyed = hasattr(dataset, "set_epoch")
    end_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    batches = EpochBatches(len(dataset), local_batch, steps, cfg.seed, start_epoch, end_epoch, rank=ctx.rank,
                           world=ctx.world_size, keyed=keyed)
    # its own generator (worker seeds): creating the iterator must not draw from the global RNG,
    # or a resumed run's augmentations would differ from an uninterrupted run's
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed * 100_003 + ctx.rank + start_epoch))
    before_fork(cfg.num_workers)
    batch_iter = iter(loader)  # one iterator, so the workers live for the whole run
    clock = PhaseClock(device).watch(method)  # where each step's time goes (phases.py)
    try:
        t_start = time.perf_counter()
        for epoch in range(start_epoch, end_epoch):
            method.train()
            sums: dict[str, float] = {}
            clock.reset()
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (progress and ctx.is_main),
                       leave=False)
            bad = None  # on the device: whether any loss since the last log point was not finite
            for step in range(steps):
                clock.mark("data")
                batch = next(batch_iter)
                clock.mark("transfer")
                batch = _to_device(batch, device)
                clips_per_video = batch["clips"].shape[1]  # B x S x C x T x H x W: S clips of every video
                clock.mark("loss")  # the method's own code; its hooks mark augment and forward
                if hasattr(method, "set_progress"):
                    method.set_progress((epoch + step / steps) / cfg.epochs)
                clipping = cfg.grad_clip and (epoch * steps + step >= warmup_steps or not cfg.grad_clip_after_warmup)
                loss, logs = train_step(model, batch, optimizer, device=device, amp=cfg.amp, mark=clock.mark,
                                        grad_clip=cfg.grad_clip if clipping else 0.0, clip_groups=clip_groups)
                finite = torch.isfinite(loss.detach())
                bad = ~finite if bad is None else bad | ~finite
                scheduler.step()
                for k, v in logs.items():  # summed where they are: device tensors stay on the device
                    sums[k] = sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
                bar.update(1)
                if (step + 1) % cfg.log_every == 0 or step + 1 == steps:  # a log point: the host reads the device once
                    any_bad, last = torch.stack([bad.float(), loss.detach().float()]).tolist()
                    if any_bad:
                        first = step + 2 - ((step + 1) % cfg.log_every or cfg.log_every)
                        raise FloatingPointError(f"the loss was not finite at epoch {epoch + 1}, within steps "
                                                 f"{first}-{step + 1} (now {last}); lower the learning rate "
                                                 f"(lr={cfg.lr}).")
                    bad = None
                    so_far = clock.read()  # its events are done: the read above waited for the whole step
                    bar.set_postfix(loss=f"{last:.3f}", data_wait=f"{so_far['data'] / max(sum(so_far.values()), 1e-9):.0%}")
            clock.mark(None)
            bar.close()
            on_device = [k for k, v in sums.items() if torch.is_tensor(v)]
            if on_device:  # one read for every log of the epoch
                sums.update(zip(on_device, torch.stack([sums[k] for k in on_device]).tolist()))
            means = distributed.mean_over_processes({k: v / steps for k, v in sums.items()})
            phases = distributed.mean_over_processes(clock.read())  # the epoch's seconds, phase by phase
            seconds = sum(phases.values())
            record = {"epoch": epoch + 1, **means, "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                      "data_wait_fraction": round(phases["data"] / max(seconds, 1e-9), 4),
                      "data_wait_ms_per_step": round(1000 * phases["data"] / steps, 2),
                      "videos_per_s": round(steps * cfg.batch_size / max(seconds, 1e-9), 2),
                      "clips_per_s": round(steps * cfg.batch_size * clips_per_video / max(seconds, 1e-9), 2),
                      **phase_record(phases, steps)}
            history.append(record)
            rng = distributed.gather_objects(rng_state(device))
            if ctx.is_main:
                with open(out / METRICS, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                save_atomic({"method": method.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "rng": rng, "epoch": epoch + 1,
                             "history": history, "config": asdict(cfg), "world_size": ctx.world_size}, ckpt_path)
            distributed.barrier()
    finally:  # also when a step fails: the method's modules keep no hooks
        clock.unwatch()
    del batch_iter
    summary = {"epochs_done": len(history), "epochs": cfg.epochs, "final": history[-1] if history else None,
               "seconds_this_call": round(time.perf_counter() - t_start, 2), "device": str(device),
               "processes": ctx.world_size, "config": asdict(cfg), "checkpoint": str(ckpt_path)}
    if ctx.is_main:
        (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def load_or_train(method: torch.nn.Module, dataset, cfg: TrainConfig, out: str | os.PathLike, **kwargs) -> dict:
    """For notebooks: load the finished run in ``out`` if it exists, else train (or finish) it."""
    ckpt = Path(out) / CHECKPOINT
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if not _changed_settings(state["config"], cfg) and state["epoch"] == cfg.epochs:
            method.load_state_dict(state["method"])
            return json.loads((Path(out) / SUMMARY).read_text(encoding="utf-8"))
    return train(method, dataset, cfg, out, **kwargs)
