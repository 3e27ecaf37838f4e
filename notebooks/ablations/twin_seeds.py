"""How much of notebook 04's static-bias-twin result is the seed? (issue 15's twin target)

Trains SimCLR at the course budget (notebook 04's setting) on the twin and on the plain data
with several seeds, and on the twin without its colour augmentation (jitter and grayscale off,
notebook 04's third twin run); draws random-init backbones with several seeds; and reads each
one with ``course_lib.evaluate.bias_probes``: the motion class on the twin and on the plain data,
and colour, background and shape. SimCLR's projection head is read too (backbone, then head),
and, as a yardstick, six numbers per clip: the mean and spread of each colour channel.

    COURSE_QUICK=0 python notebooks/ablations/twin_seeds.py --out twin_seeds.json

Seed 0 of each SimCLR uses notebook 04's run folders (``04/simclr``, ``04/twin-simclr``,
``04/twin-simclr_no_colour``), so it shares their cache; other seeds (and every run with
``--epochs``) train under ``04/seeds/``. The output file is written after each row and a second
call skips the rows it holds, so the measurement can be stopped and resumed.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from course_lib.data import builtin_dataset
from course_lib.evaluate import bias_probes
from course_lib.experiment import course_config, load_method, pretrain
from course_lib.models import create_model
from course_lib.machine import setup


class ColourStats(nn.Module):
    """No network at all: the mean and spread of each colour channel of a clip, N x C x T x H x W -> N x 2C."""

    def forward(self, x):
        return torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4))], 1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file of the rows (resumed if it exists)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SimCLR training seeds")
    p.add_argument("--no-colour-seeds", type=int, nargs="*", default=[0],
                   help="SimCLR on the twin without colour jitter and grayscale (notebook 04's third twin run)")
    p.add_argument("--random-seeds", type=int, default=5, help="random-init backbones, seeds 0..N-1")
    p.add_argument("--epochs", type=int, default=None, help="override the budget's epochs (for a smoke test)")
    args = p.parse_args(argv)

    S = setup(seed=0)
    base = course_config(S.quick)
    if args.epochs:
        base = replace(base, epochs=args.epochs)
    plain, twin = builtin_dataset(progress=False), builtin_dataset(static_bias=1, progress=False)
    out = Path(args.out)
    rows = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}

    def record(name: str, row: dict, t0: float) -> None:
        rows[name] = {**row, "seconds": round(time.perf_counter() - t0)}
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"{name:24s} " + "  ".join(f"{k} {v:.1f}" for k, v in row.items() if isinstance(v, float)), flush=True)

    for seed in range(args.random_seeds):
        name = f"random init, seed {seed}"
        if name not in rows:
            t0 = time.perf_counter()
            torch.manual_seed(seed)  # notebook 04's random init is seed 0
            record(name, bias_probes(create_model(base.model, width=base.width), base, plain, twin, S.device), t0)

    name = "colour statistics (6 numbers)"  # how far appearance alone goes on the twin
    if name not in rows:
        t0 = time.perf_counter()
        record(name, bias_probes(ColourStats(), base, plain, twin, S.device), t0)

    simclr = replace(base, method="simclr", options={"temperature": 0.1})  # notebook 04's SimCLR
    no_colour = replace(simclr, options={"temperature": 0.1, "augment": {"jitter": 0.0, "grayscale": 0.0}})
    arms = []  # (row name, config, data, notebook 04's run folder, seed)
    for seed in args.seeds:
        arms += [(f"simclr on twin, seed {seed}", simclr, twin, "04/twin-simclr", seed),
                 (f"simclr on plain, seed {seed}", simclr, plain, "04/simclr", seed)]
    arms += [(f"simclr without colour augmentation on twin, seed {seed}", no_colour, twin, "04/twin-simclr_no_colour",
              seed) for seed in args.no_colour_seeds]
    for name, cfg, data, folder, seed in arms:
        if name in rows:
            continue
        shared = seed == 0 and not args.epochs  # notebook 04's own run
        run = S.runs / (folder if shared else f"04/seeds/{folder[3:]}-seed{seed}-{base.epochs}ep")
        t0 = time.perf_counter()
        pretrain(replace(cfg, seed=seed), str(data.root), run, progress=False)
        method, _ = load_method(run, num_classes=len(plain.classes), num_videos=len(data.split("train")))
        record(name, bias_probes(method.backbone, base, plain, twin, S.device), t0)
        t0 = time.perf_counter()  # the projection head's output: what NT-Xent itself compares
        record(name + ", head", bias_probes(nn.Sequential(method.backbone, method.projector), base, plain, twin,
                                            S.device), t0)
    return rows


if __name__ == "__main__":
    main()
