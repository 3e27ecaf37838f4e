"""Does pretraining's horizontal flip hide the direction of motion? (noted on issue 15)

SimCLR, MoCo, CVRL, BYOL and V-JEPA flip half of their views, as their papers do on ImageNet and
Kinetics. On the built-in data a mirrored ``move_left`` clip moves right and a mirrored
``rotate_cw`` clip turns anticlockwise (``synth.MIRRORED``), so a positive pair can show opposite
motions, and the loss asks the network to give them one feature. The course declares each of
these runs again with the flip off (``course.run("simclr-noflip")``), and this script reads, for
both runs and for random init and supervised training as references (``results.measure``):

* the linear probe and R@1 on the eight classes (notebook 10's frozen features);
* the direction probe: for each mirrored pair (move_left / move_right, rotate_cw / rotate_ccw), a
  linear probe told only those two classes; chance is 50, and a feature that a flip leaves
  unchanged cannot beat it;
* cos(clip, mirrored clip): how much a clip's feature changes under a flip (notebook 07 reads
  cos(clip, reversed clip) the same way).

    COURSE_QUICK=0 python notebooks/ablations/pretrain_flip.py --out pretrain_flip.json

Every run is trained once and cached (the flipped ones are notebook 10's); each run's scores are
cached beside it, and the output file is written after each row, so a second call measures
nothing again. The test split is only read, never used to choose anything.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from course_lib import course
from course_lib.machine import setup
from course_lib.results import measure


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file of the rows (resumed if it exists)")
    p.add_argument("--methods", nargs="+", default=list(course.FLIPPING),
                   help=f"methods to read with and without their flip: {', '.join(course.FLIPPING)}")
    p.add_argument("--references", nargs="*", default=["random_init", "supervised"],
                   help="runs read as they are (names of course_lib.course)")
    args = p.parse_args(argv)
    bad = [m for m in args.methods if m not in course.FLIPPING] + [r for r in args.references if r not in course.RUNS]
    if bad:
        p.error(f"unknown or non-flipping {', '.join(bad)} (--methods: {', '.join(course.FLIPPING)}; --references: "
                f"runs of course_lib.course)")

    S = setup(seed=0)
    out = Path(args.out)
    rows = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    arms = [(course.spec(r).title, r) for r in args.references]
    arms += [(row, name) for m in args.methods for row, name in ((f"{m}, flip 0.5", m), (f"{m}, no flip", f"{m}-noflip"))]
    for row, name in arms:
        if row in rows:
            continue
        t0 = time.perf_counter()
        record = measure(name, S.mode, device=S.device)  # trains the run first if the cache lacks it
        s = record["scores"]
        if "direction" not in s:
            p.error(f"{course.result_path(name, S.mode).parent}: no two classes of this dataset are mirror images "
                    f"of each other, so there is no direction to measure")
        rows[row] = {"run": name, "linear": s["linear"], "R@1": s["R@1"], "direction": s["direction"],
                     "cos(clip, mirrored clip)": s["cos mirrored"], "seconds": round(time.perf_counter() - t0)}
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        r = rows[row]
        print(f"{row:22s} linear {r['linear']:5.1f}  R@1 {r['R@1']:5.1f}  direction {r['direction']:5.1f}  "
              f"cos(clip, mirrored) {r['cos(clip, mirrored clip)']:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
