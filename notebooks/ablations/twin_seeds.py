"""How much of notebook 04's static-bias-twin result is the seed? (issue 15's twin target)

Reads SimCLR at the course budget (notebook 04's setting), trained on the twin and on the plain
data with several seeds, and on the twin without its colour augmentation (jitter and grayscale
off, notebook 04's third twin run); random-init backbones with several seeds; each one with
``course_lib.evaluate.bias_probes``: the motion class on the twin and on the plain data, and
colour, background and shape. SimCLR's projection head is read too (backbone, then head), and,
as a yardstick, six numbers per clip: the mean and spread of each colour channel.

    COURSE_QUICK=0 python notebooks/ablations/twin_seeds.py --out twin_seeds.json

Every run is a named run of ``course_lib.course`` (``simclr``, ``simclr-seed1``, ``twin-simclr``,
``random_init-seed3``, ...), trained once and cached; ``--epochs`` shortens them into folders of
their own beside the course's. The output file is written after each row and a second call skips
the rows it holds, so the measurement can be stopped and resumed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from course_lib import course
from course_lib.data import builtin_dataset
from course_lib.evaluate import bias_probes
from course_lib.machine import setup


class ColourStats(nn.Module):
    """No network at all: the mean and spread of each colour channel of a clip, N x C x T x H x W -> N x 2C."""

    def forward(self, x):
        return torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4))], 1)


def seeded(name: str, seed: int) -> str:
    """The run ``name`` with ``seed`` (seed 0 is the run itself)."""
    return name if seed == 0 else f"{name}-seed{seed}"


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
    base = course.budget(S.mode)
    changes = {"epochs": args.epochs} if args.epochs else {}
    plain, twin = builtin_dataset(progress=False), builtin_dataset(static_bias=1, progress=False)
    out = Path(args.out)
    rows = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    names = [(f"random init, seed {seed}", seeded("random_init", seed)) for seed in range(args.random_seeds)]
    names += [("colour statistics (6 numbers)", None)]
    for seed in args.seeds:
        names += [(f"simclr on twin, seed {seed}", seeded("twin-simclr", seed)),
                  (f"simclr on plain, seed {seed}", seeded("simclr", seed))]
    names += [(f"simclr without colour augmentation on twin, seed {seed}", seeded("twin-simclr_no_colour", seed))
              for seed in args.no_colour_seeds]
    unknown = [n for _, n in names if n is not None and n not in course.RUNS]
    if unknown:
        p.error(f"the course declares no run {', '.join(unknown)} (its seeds: {', '.join(course.names('seeds'))})")

    def record(name: str, backbone: nn.Module, t0: float) -> None:
        rows[name] = {**bias_probes(backbone, base, plain, twin, S.device), "seconds": round(time.perf_counter() - t0)}
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"{name:24s} " + "  ".join(f"{k} {v:.1f}" for k, v in rows[name].items() if isinstance(v, float)),
              flush=True)

    for row, name in names:
        if row in rows:
            continue
        t0 = time.perf_counter()
        if name is None:
            record(row, ColourStats(), t0)
            continue
        run = course.run(name, S.mode, **(changes if course.spec(name).method else {}))
        if run.folder is None:
            record(row, run.backbone(), t0)
            continue
        method = run.method()  # trained first if the cache lacks it
        record(row, method.backbone, t0)
        if hasattr(method, "projector") and f"{row}, head" not in rows:  # the projection head: what NT-Xent compares
            record(f"{row}, head", nn.Sequential(method.backbone, method.projector), time.perf_counter())
    return rows


if __name__ == "__main__":
    main()
