"""Where a training step's time goes, phase by phase.

``PHASES``, in the order a step runs them:

* ``data``: waiting for the loader's next batch;
* ``transfer``: host-to-device copies;
* ``augment``: the method's augmentation modules (``VideoAugment``);
* ``forward``: its networks (backbone, heads, projectors, predictors, target encoders);
* ``loss``: the method's own code between them: the loss, and its negatives, masks, queues;
* ``backward``: gradients;
* ``optimizer``: gradient clipping, the optimiser's step and the schedule.

The training loop marks the phases it runs itself; inside a method, hooks on its modules mark
``augment`` and ``forward`` and leave the rest to ``loss``, so every method is timed without
touching its code. On the CPU a mark reads the clock; on CUDA it records an event in the
stream, and the events are read only where the loop reads the device anyway (its log points),
so timing adds no wait: the phases are then the GPU's timeline.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from .augment import VideoAugment
from .methods.registry import Method

PHASES = ("data", "transfer", "augment", "forward", "loss", "backward", "optimizer")
INSIDE = ("augment", "forward", "loss")  # the phases of a method's forward, where its hooks mark


class PhaseClock:
    """Seconds spent in each phase: ``mark(phase)`` ends the running phase and starts ``phase``."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.totals = dict.fromkeys(PHASES, 0.0)  # seconds, read so far
        self._open: tuple[str, object] | None = None  # the running phase and its start
        self._spans: list = []  # CUDA: (phase, start event, end event), not read yet
        self._depth = 0  # how deep the method is inside its hooked modules
        self._handles: list = []

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def mark(self, phase: str | None) -> None:
        """End the running phase (if any) and start ``phase`` (None: stop the clock)."""
        now = self._now()
        if self._open is not None:
            name, start = self._open
            if self.cuda:
                self._spans.append((name, start, now))
            else:
                self.totals[name] += now - start
        self._open = (phase, now) if phase else None
        self._depth = 0

    def read(self) -> dict[str, float]:
        """Seconds per phase so far (on CUDA this waits for the last event marked)."""
        if self._spans:
            self._spans[-1][2].synchronize()
            for name, start, end in self._spans:
                self.totals[name] += start.elapsed_time(end) / 1000
            self._spans.clear()
        return dict(self.totals)

    def reset(self) -> None:
        self.read()
        self.totals = dict.fromkeys(PHASES, 0.0)

    # ------------------------------------------------------------------ hooks inside a method
    def watch(self, method: nn.Module) -> "PhaseClock":
        """Hook ``method``'s modules: its augmentation modules time as ``augment``, its networks as
        ``forward`` (their submodules too, so a network's own methods such as a ViT's ``tokens`` count),
        the method's code between them as ``loss``. A method inside a method (DualVar's MoCo) is looked
        into, not timed as a network. ``unwatch`` removes the hooks."""
        seen: set[int] = set()

        def visit(module: nn.Module, phase: str | None) -> None:
            for child in module.children():
                if id(child) in seen:
                    continue
                seen.add(id(child))
                if isinstance(child, Method):
                    visit(child, None)
                    continue
                mine = phase or ("augment" if isinstance(child, VideoAugment) else "forward")
                self._hook(child, mine)
                if mine == "forward" and getattr(child, "_compiled_call_impl", None) is None:
                    visit(child, mine)  # its submodules, for calls that do not go through its forward

        visit(method, None)
        return self

    def _hook(self, module: nn.Module, phase: str) -> None:
        @torch.compiler.disable
        def enter(_module, _args):
            if self._open is not None and self._open[0] in INSIDE:
                if self._depth == 0:
                    self.mark(phase)
                self._depth += 1

        @torch.compiler.disable
        def leave(_module, _args, _out):
            if self._open is not None and self._open[0] in INSIDE and self._depth > 0:
                self._depth -= 1
                if self._depth == 0:
                    self.mark("loss")

        self._handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]

    def unwatch(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def phase_record(seconds: dict[str, float], steps: int) -> dict:
    """ms per step and share of the step of each phase, for a log line."""
    total = sum(seconds[k] for k in PHASES)
    return {"phase_ms": {k: round(1000 * seconds[k] / max(steps, 1), 2) for k in PHASES},
            "phase_share": {k: round(seconds[k] / total, 4) if total else 0.0 for k in PHASES}}
