"""One training loop for supervised training and every self-supervised method.

A *method* is an ``nn.Module`` whose ``forward(batch)`` returns ``(loss, logs)``; the loop
does not know which method it runs. It moves each batch to the device (pinned memory,
non-blocking copies), runs the step under bf16 autocast on CUDA, follows a learning-rate
schedule per step, logs the time spent waiting for data, writes one JSON line of metrics
per epoch, and checkpoints atomically at the end of every epoch.

Resuming is exact: an epoch's clips depend only on ``(seed, epoch, index)``, its batch
order on a generator seeded with ``(seed, epoch)``, and the checkpoint holds the model,
optimiser, scheduler and torch RNG state. On the CPU a resumed run ends bit-for-bit
equal to an uninterrupted one (``tests/test_train.py``).
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

from .runtime import get_device, seed_everything

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" (momentum) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine", "multistep" or "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr *= gamma
    gamma: float = 0.1
    num_workers: int = 2
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    steps_per_epoch: int | None = None  # cap, for quick runs
    grad_clip: float | None = None

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}.")
        if self.schedule not in ("cosine", "multistep", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'multistep' or 'constant', not {self.schedule!r}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size}).")


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "multistep":
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 1.0


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train(method: torch.nn.Module, dataset, cfg: TrainConfig, out: str | os.PathLike, *, device=None,
          resume: bool = True, progress: bool = True, stop_after_epochs: int | None = None) -> dict:
    """Train ``method`` on ``dataset`` for ``cfg.epochs``; write checkpoint, metrics and summary under ``out``.

    With ``resume=True`` a checkpoint in ``out`` is continued from. ``stop_after_epochs``
    ends the call early (as an interruption would), leaving a resumable checkpoint.
    Returns the summary dict (also written to ``summary.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = get_device(device)
    seed_everything(cfg.seed)
    method.to(device)
    optimizer = build_optimizer([p for p in method.parameters() if p.requires_grad], cfg)
    steps = len(dataset) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the dataset ({len(dataset)} videos).")
    steps = min(steps, cfg.steps_per_epoch or steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, cfg))
    start_epoch, history = 0, []
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        if state["config"] != asdict(cfg):
            raise ValueError(f"{ckpt_path}: was written with another training config; use a new --out or resume=False.")
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, history = state["epoch"], state["history"]
    elif ckpt_path.exists():
        ckpt_path.unlink()
        (out / METRICS).unlink(missing_ok=True)
    use_amp = cfg.amp and device.type == "cuda"
    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if stop_after_epochs is not None and epoch >= start_epoch + stop_after_epochs:
            break
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        order = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=order, drop_last=True,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            persistent_workers=False)
        method.train()
        sums: dict[str, float] = {}
        wait = compute = 0.0
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, batch in enumerate(loader):
            if step == steps:
                break
            t1 = time.perf_counter()
            wait += t1 - t0
            batch = _to_device(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, logs = method(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                         f"lower the learning rate (lr={cfg.lr}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            t0 = time.perf_counter()
            compute += t0 - t1
            bar.update(1)
            bar.set_postfix(loss=f"{logs.get('loss', loss.item()):.3f}")
        bar.close()
        n = step + 1 if step < steps else steps
        record = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                  "lr": optimizer.param_groups[0]["lr"], "seconds": round(wait + compute, 3),
                  "data_wait_fraction": round(wait / max(wait + compute, 1e-9), 4),
                  "clips_per_s": round(n * cfg.batch_size / max(wait + compute, 1e-9), 2)}
        history.append(record)
        with open(out / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        save_atomic({"method": method.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                     "history": history, "config": asdict(cfg)}, ckpt_path)
    summary = {"epochs_done": len(history), "epochs": cfg.epochs, "final": history[-1] if history else None,
               "seconds_this_call": round(time.perf_counter() - t_start, 2), "device": str(device),
               "config": asdict(cfg), "checkpoint": str(ckpt_path)}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_or_train(method: torch.nn.Module, dataset, cfg: TrainConfig, out: str | os.PathLike, **kwargs) -> dict:
    """For notebooks: load the finished run in ``out`` if it exists, else train (or finish) it."""
    ckpt = Path(out) / CHECKPOINT
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state["config"] == asdict(cfg) and state["epoch"] == cfg.epochs:
            method.load_state_dict(state["method"])
            return json.loads((Path(out) / SUMMARY).read_text())
    return train(method, dataset, cfg, out, **kwargs)
