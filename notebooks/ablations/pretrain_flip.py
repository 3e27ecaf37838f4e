"""Does pretraining's horizontal flip hide the direction of motion? (noted on issue 15)

SimCLR, MoCo, CVRL, BYOL and V-JEPA flip half of their views, as their papers do on ImageNet and
Kinetics. On the built-in data a mirrored ``move_left`` clip moves right and a mirrored
``rotate_cw`` clip turns anticlockwise (``synth.MIRRORED``), so a positive pair can show opposite
motions, and the loss asks the network to give them one feature. This script trains each method
again at notebook 10's budget with the flip off (``augment.flip=0``) and reads, for both runs and
for random init and supervised training as references:

* the linear probe and R@1 on the eight classes (notebook 10's frozen features);
* the direction probe: for each mirrored pair (move_left / move_right, rotate_cw / rotate_ccw), a
  linear probe told only those two classes; chance is 50, and a feature that a flip leaves
  unchanged cannot beat it;
* cos(clip, mirrored clip): how much a clip's feature changes under a flip (notebook 07 reads
  cos(clip, reversed clip) the same way).

    COURSE_QUICK=0 python notebooks/ablations/pretrain_flip.py --out pretrain_flip.json

The flipped runs are notebook 10's (``comparison_runs``), so they load from its cache; the
unflipped ones are cached beside them (``04/simclr_noflip``). The output file is written after
each row and a second call skips the rows it holds. The test split is only read, never used to
choose anything.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from course_lib.data import ClipDataset, UniformClipSampler, course_dataset
from course_lib.data.synth import MIRRORED
from course_lib.evaluate import frozen_features, linear_probe, retrieval
from course_lib.experiment import comparison_runs, course_config, load_backbone, pretrain
from course_lib.methods.common import normalize
from course_lib.models import create_model
from course_lib.machine import setup

FLIPPING = ("simclr", "moco", "cvrl", "byol", "vjepa")  # the methods of comparison_runs whose views flip


def without_flip(cfg):
    """The same run with its views never flipped (the method's other augmentation unchanged)."""
    options = dict(cfg.options or {})
    options["augment"] = {**options.get("augment", {}), "flip": 0.0}
    return replace(cfg, options=options)


def mirror_pairs(classes: list[str]) -> list[tuple[int, int]]:
    """Index pairs of ``classes`` that a horizontal flip swaps, each pair once."""
    return [(i, classes.index(MIRRORED[c])) for i, c in enumerate(classes)
            if MIRRORED.get(c) in classes and i < classes.index(MIRRORED[c])]


def direction_probe(a, ya, b, yb, pairs: list[tuple[int, int]]) -> float:
    """Mean test accuracy (%) over ``pairs`` of a linear probe trained on the two classes of a pair only."""
    accs = []
    for i, j in pairs:
        train, test = (ya == i) | (ya == j), (yb == i) | (yb == j)
        accs.append(linear_probe(a[train], (ya[train] == j).long(), b[test], (yb[test] == j).long())["test_acc"])
    return sum(accs) / len(accs)


@torch.no_grad()
def mirror_similarity(backbone: torch.nn.Module, clips: torch.Tensor, device="cpu", batch_size: int = 16) -> float:
    """Mean cosine similarity between the features of uint8 clips N x C x T x H x W and of their mirror images."""
    backbone.to(device).eval()
    sims = []
    for x in clips.split(batch_size):
        x = normalize(x.to(device).float() / 255)
        sims.append(F.cosine_similarity(backbone(x), backbone(x.flip(-1)), dim=1))
    return torch.cat(sims).mean().item()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file of the rows (resumed if it exists)")
    p.add_argument("--methods", nargs="+", default=list(FLIPPING), help=f"methods to train without flip: {FLIPPING}")
    p.add_argument("--references", nargs="*", default=["random init", "supervised"],
                   help="rows read as they are: 'random init' and methods of comparison_runs")
    args = p.parse_args(argv)

    S = setup(seed=0)
    manifest = course_dataset()
    base = course_config(S.quick)
    runs = comparison_runs(base)
    bad = [m for m in args.methods if m not in FLIPPING] + [r for r in args.references
                                                            if r != "random init" and r not in runs]
    if bad:
        p.error(f"unknown or non-flipping {', '.join(bad)} (--methods: {', '.join(FLIPPING)}; --references: "
                f"'random init' or one of {', '.join(runs)})")
    pairs = mirror_pairs(manifest.classes)
    if not pairs:
        p.error(f"{manifest.root}: no two classes are mirror images of each other, so there is nothing to measure")
    out = Path(args.out)
    rows = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    test = ClipDataset(manifest, UniformClipSampler(clip_len=base.clip_len, stride=base.stride, num_clips=1),
                       split="test", size=(base.size, base.size))
    clips = None  # one centre clip per test video, decoded on first use

    arms = [(r, r, None) for r in args.references]
    arms += [(row, m, cfg) for m in args.methods
             for row, cfg in ((f"{m}, flip 0.5", runs[m][1]), (f"{m}, no flip", without_flip(runs[m][1])))]
    for row, name, cfg in arms:
        if row in rows:
            continue
        t0 = time.perf_counter()
        if name == "random init":
            torch.manual_seed(0)  # notebook 10's random init
            bb, folder = create_model(base.model, width=base.width), None
        else:
            cfg = cfg or runs[name][1]
            folder = runs[name][0] + ("_noflip" if row.endswith("no flip") else "")
            pretrain(cfg, str(manifest.root), S.runs / folder, progress=False)  # cached: loads
            bb = load_backbone(S.runs / folder)[0]
        a, ya, b, yb = frozen_features(bb, base, manifest, S.device)
        if clips is None:
            clips = torch.stack([test[i]["clips"][0] for i in range(len(test))])  # N x C x T x H x W uint8
        rows[row] = {"linear": linear_probe(a, ya, b, yb)["test_acc"], "R@1": retrieval(a, ya, b, yb, ks=(1,))["R@1"],
                     "direction": direction_probe(a, ya, b, yb, pairs),
                     "cos(clip, mirrored clip)": mirror_similarity(bb, clips, S.device), "folder": folder,
                     "seconds": round(time.perf_counter() - t0)}
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        r = rows[row]
        print(f"{row:22s} linear {r['linear']:5.1f}  R@1 {r['R@1']:5.1f}  direction {r['direction']:5.1f}  "
              f"cos(clip, mirrored) {r['cos(clip, mirrored clip)']:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
