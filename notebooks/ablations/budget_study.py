"""Which budget shows learning on a laptop CPU? Linear-probe accuracy against CPU-minutes (issue 33).

Trains supervised, IIC, speed and SimCLR (the course's named runs, their options unchanged) at
points of a budget grid around a centre point, one factor at a time: training videos per class
(a subset of the built-in dataset's 60), epochs, frame size, frames per clip and backbone width.
Each trained backbone is read by the course's frozen protocol (clip-averaged features of 3 clips
per video, a linear probe and R@1 on all 120 test videos of the built-in dataset, the training
subset as the probe's training set); random-init backbones give the floor at each point's input.
Training runs in one thread without loader workers, so its process CPU time is the CPU-minutes it
costs on any machine (the frames are decoded once, into the frame cache).

    python notebooks/ablations/budget_study.py --out notebooks/results/study/budget_study.json
    python notebooks/ablations/budget_study.py --out ... --point videos=60,epochs=10 --seeds 0 1 2
    python notebooks/ablations/budget_study.py --out ... --plot docs/figures/budget_study.png
    python notebooks/ablations/budget_study.py --out ... --table      # the markdown table of docs/measurements.md

Runs are cached under ``$COURSE_DATA/runs/study``; the output file is written after each row and
a second call skips the rows it holds, so the study can be stopped and resumed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from course_lib import course
from course_lib.data import Manifest, builtin_dataset
from course_lib.evaluate import frozen_features, linear_probe, retrieval
from course_lib.experiment import load_backbone, pretrain
from course_lib.models import create_model
from course_lib.runtime import data_dir

METHODS = ("supervised", "iic", "speed", "simclr")  # the course's named runs the study trains
CENTRE = {"videos": 60, "epochs": 10, "size": 48, "clip_len": 16, "width": 0.25}
GRID = {"videos": (30, 60), "epochs": (5, 10, 20), "size": (32, 48, 64), "clip_len": (8, 16),
        "width": (0.25, 0.5)}  # each factor varied alone around CENTRE


def grid_points() -> list[dict]:
    """CENTRE, then each factor's other values with the rest at CENTRE."""
    points = [dict(CENTRE)]
    for factor, values in GRID.items():
        points += [{**CENTRE, factor: v} for v in values if v != CENTRE[factor]]
    return points


def parse_point(text: str) -> dict:
    """``videos=60,epochs=10`` -> CENTRE with those changes."""
    point = dict(CENTRE)
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        if key not in CENTRE:
            raise SystemExit(f"--point {text}: {key!r} is not a factor of the study ({', '.join(CENTRE)}).")
        point[key] = type(CENTRE[key])(value)
    return point


def tag(point: dict) -> str:
    return "-".join(f"{k}{point[k]:g}" for k in CENTRE)


def subset(manifest: Manifest, per_class: int, folder: Path) -> Path:
    """A manifest of the first ``per_class`` training videos of each class and every test video (absolute paths)."""
    taken: dict[str, int] = {}
    entries = []
    for e in manifest.entries:
        if e.split == "train":
            taken[e.label] = taken.get(e.label, 0) + 1
            if taken[e.label] > per_class:
                continue
        entries.append(replace(e, path=str(manifest.path(e).resolve())))
    return Manifest(folder, manifest.classes, entries).save(folder / "manifest.jsonl")


def config(name: str, point: dict, seed: int):
    """The named run's config at the study point: its options, the point's budget, one thread's worth of loading."""
    changes = {k: v for k, v in point.items() if k != "videos"}
    return replace(course.run(name, "full", **changes).config, seed=seed, num_workers=0, device="cpu")


def probe(backbone, cfg, manifest: Manifest) -> dict:
    """The point's scores, and the seconds they took to measure (features and probes, not the training)."""
    t0 = time.perf_counter()
    a, ya, b, yb = frozen_features(backbone, cfg, manifest, torch.device("cpu"))
    return {"linear": linear_probe(a, ya, b, yb)["test_acc"], "R@1": retrieval(a, ya, b, yb, ks=(1,))["R@1"],
            "eval_seconds": time.perf_counter() - t0}


def measure(name: str, point: dict, seed: int, data: Path, root: Path) -> dict:
    manifest = Manifest.load(data)
    if name == "random_init":
        cfg = config("supervised", point, seed)
        torch.manual_seed(seed)
        return {**probe(create_model(cfg.model, width=cfg.width), cfg, manifest), "cpu_seconds": 0.0}
    cfg = config(name, point, seed)
    folder = root / tag(point) / f"{name}-seed{seed}"
    if not (folder / "summary.json").exists():  # a training interrupted earlier: its time is measured whole, so
        shutil.rmtree(folder, ignore_errors=True)  # it starts again (resuming would time only the last part)
    cpu, wall = time.process_time(), time.perf_counter()
    pretrain(cfg, str(data), folder, progress=False)  # loads a finished run from the cache
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    times = folder / "study_seconds.json"  # the training's own cost, kept beside its cache
    if not times.exists() or cpu > 5:
        times.write_text(json.dumps({"cpu_seconds": cpu, "wall_seconds": wall}) + "\n", encoding="utf-8")
    spent = json.loads(times.read_text(encoding="utf-8"))
    return {**probe(load_backbone(folder)[0], cfg, manifest), **spent}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file of the rows (resumed if it exists)")
    p.add_argument("--point", action="append", default=None, help="factor=value,... (default: the grid)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--plot", default=None, help="write the figure of the rows in --out to this PNG and stop")
    p.add_argument("--table", action="store_true", help="print the rows in --out as a markdown table and stop")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    if args.plot:
        plot(rows, args.plot)
        return rows
    if args.table:
        print(table(rows))
        return rows
    torch.set_num_threads(1)
    full = builtin_dataset(quick=False, progress=False)
    root = data_dir() / "runs" / "study"
    points = [parse_point(t) for t in args.point] if args.point else grid_points()
    for point in points:
        data = subset(full, point["videos"], root / f"videos{point['videos']}")
        for seed in args.seeds:
            for name in ("random_init", *args.methods):
                key = f"{name} {tag(point)} seed{seed}"
                if key in rows:
                    continue
                row = {"method": name, "seed": seed, **point, **measure(name, point, seed, data, root),
                       "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
                rows[key] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
                print(f"{key:56s} linear {row['linear']:5.1f}  R@1 {row['R@1']:5.1f}  "
                      f"cpu {row['cpu_seconds'] / 60:5.1f} min", flush=True)
    return rows


def table(rows: dict) -> str:
    """One line per study point: each method's linear probe (mean over seeds, the seed range where there are
    several) and its training CPU-minutes, beside random init's."""
    points: dict[tuple, dict] = {}
    for r in rows.values():
        points.setdefault(tuple(r[k] for k in CENTRE), {}).setdefault(r["method"], []).append(r)
    names = ("random_init", *METHODS)
    lines = ["| " + " | ".join([*CENTRE, *(f"{n} linear" for n in names), *(f"{n} CPU-min" for n in METHODS)]) + " |",
             "|" + "---|" * (len(CENTRE) + len(names) + len(METHODS))]
    for point, by in sorted(points.items()):
        def acc(n):
            v = [r["linear"] for r in by.get(n, [])]
            if not v:
                return ""
            mean = f"{sum(v) / len(v):.1f}"
            return mean + (f" ({min(v):.1f}-{max(v):.1f}, {len(v)} seeds)" if len(v) > 1 else "")

        def cpu(n):
            v = [r["cpu_seconds"] / 60 for r in by.get(n, [])]
            return f"{sum(v) / len(v):.1f}" if v else ""
        lines.append("| " + " | ".join([*(f"{x:g}" for x in point), *map(acc, names), *map(cpu, METHODS)]) + " |")
    return "\n".join(lines)


def plot(rows: dict, path: str) -> None:
    """Linear accuracy against training CPU-minutes, one panel per factor (the mean over seeds, the seed range as
    an error bar), random init as the floor."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GRID), figsize=(4 * len(GRID), 3.6), sharey=True)
    colours = dict(zip(METHODS, ("black", "tab:blue", "tab:orange", "tab:green")))
    for ax, (factor, values) in zip(axes, GRID.items()):
        for name in METHODS:
            seeds: dict[float, list] = {}  # factor value -> [(CPU-minutes, linear)] over seeds
            for r in rows.values():
                if r["method"] == name and all(r[k] == CENTRE[k] for k in CENTRE if k != factor):
                    seeds.setdefault(r[factor], []).append((r["cpu_seconds"] / 60, r["linear"]))
            if not seeds:
                continue
            values = sorted(seeds)
            x = [sum(c for c, _ in seeds[v]) / len(seeds[v]) for v in values]
            y = [sum(a for _, a in seeds[v]) / len(seeds[v]) for v in values]
            spread = [[y_ - min(a for _, a in seeds[v]) for v, y_ in zip(values, y)],
                      [max(a for _, a in seeds[v]) - y_ for v, y_ in zip(values, y)]]
            ax.errorbar(x, y, yerr=spread, fmt="o-", color=colours[name], label=name, capsize=3)
            for v, x_, y_ in zip(values, x, y):
                ax.annotate(f"{v:g}", (x_, y_), fontsize=7, xytext=(3, 3), textcoords="offset points")
        floor = [r["linear"] for r in rows.values() if r["method"] == "random_init"
                 and all(r[k] == CENTRE[k] for k in CENTRE)]
        if floor:
            ax.axhline(sum(floor) / len(floor), color="grey", ls="--", label="random init")
        ax.set(title=f"varying {factor}", xlabel="training CPU-minutes (1 thread)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe, % (120 test videos)")
    labelled = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    if labelled:
        axes[0].legend(labelled.values(), labelled.keys(), fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
