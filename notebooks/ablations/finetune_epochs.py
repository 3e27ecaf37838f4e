"""Why does fine-tuning from some pretrained networks stay near chance in notebook 10? (issue 15)

Fine-tunes starting points of notebook 10 with its recipe (``course.finetune_config``: lr 1e-3, no
warm-up, the budget's clips and batch; ``finetune_augment``: no flip on the built-in data) for
the recipe's epochs and for longer, and random inits drawn with other seeds. For each run it
records the test accuracy, the last epoch's training accuracy and the first epoch whose training
accuracy reaches twice chance: how long the run sat on the plateau that every fine-tuning here
starts on (the loss near ln 8 = 2.08 of a uniform guess).

    COURSE_QUICK=0 python notebooks/ablations/finetune_epochs.py --out finetune_epochs.json

``--flip`` flips half of the training clips, as the recipe did before it knew that a flip turns
move_left into move_right here: its rows measure what that label noise costs.

The recipe's own runs are notebook 10's (``course.finetune_folder``), so they share its cache; longer
ones are cached beside them. The output file is written after each row and a second call skips
the rows it holds. Only the training curves decide anything here: the test accuracy is reported,
never used to pick the recipe.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path


from course_lib import course
from course_lib.augment import crop_room
from course_lib.data import course_dataset
from course_lib.evaluate import eval_set, finetune, finetune_augment, train_clips
from course_lib.machine import setup


def plateau_epochs(metrics: list[dict], chance: float) -> int | None:
    """The first epoch (1-based) whose training accuracy reaches twice ``chance`` (a fraction), or None."""
    return next((m["epoch"] for m in metrics if m["acc"] >= 2 * chance), None)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file of the rows (resumed if it exists)")
    p.add_argument("--starts", nargs="+", default=["random_init", "vcop", "dualvar"],
                   help="notebook 10's starting points: runs of course_lib.course's comparison")
    p.add_argument("--epochs", type=int, nargs="+", default=None,
                   help="fine-tuning epochs (default: the recipe's and 30)")
    p.add_argument("--random-seeds", type=int, nargs="*", default=[1, 2],
                   help="more random inits, fine-tuned for the recipe's epochs (notebook 10's is seed 0)")
    p.add_argument("--flip", action="store_true", help="flip half of the training clips (the earlier recipe)")
    args = p.parse_args(argv)

    S = setup(seed=0)
    manifest = course_dataset()
    base = course.budget(S.mode)
    recipe = course.finetune_config(base, S.mode).epochs
    unknown = [s for s in args.starts if s not in course.COMPARISON]
    if unknown:
        p.error(f"--starts: unknown {', '.join(unknown)} (choose one of {', '.join(course.COMPARISON)})")
    out = Path(args.out)
    rows = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    room = crop_room(base.size)
    ft_train, ft_test = train_clips(base, manifest, room), eval_set(base, manifest, "test", frames=room)
    chance = 1 / len(manifest.classes)
    augment = finetune_augment(manifest.classes)  # notebook 10's: no flip on the built-in data
    if args.flip:
        augment = replace(augment, flip=0.5)
    tag = ", flipped" if args.flip else ""

    arms = [(f"{course.spec(s).title}, {e} epochs{tag}", s, e) for s in args.starts for e in (args.epochs or [recipe, 30])]
    arms += [(f"random init seed {seed}, {recipe} epochs{tag}", f"random_init-seed{seed}", recipe)
             for seed in args.random_seeds]
    for row, name, epochs in arms:
        if row in rows:
            continue
        t0 = time.perf_counter()
        run = course.run(name, S.mode)
        bb = run.backbone()  # trained first if the cache lacks it
        folder = course.finetune_folder(S.runs / "10", run.spec.title + (f" seed {run.spec.seed}" if run.spec.seed else ""),
                                        bb, None if epochs == recipe else epochs, flip=augment.flip > 0)
        r = finetune(copy.deepcopy(bb), ft_train, ft_test, course.finetune_config(base, S.mode, epochs).train_config(),
                     folder, num_classes=len(manifest.classes), device=S.device, progress=False, size=base.size,
                     augment=augment)
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        metrics = list({m["epoch"]: m for m in metrics if "acc" in m and "epoch" in m}.values())  # a resumed epoch once
        rows[row] = {"test_acc": r["test_acc"], "train_acc_last_epoch": r["train_acc_last_epoch"],
                     "reaches_twice_chance_at_epoch": plateau_epochs(metrics, chance),
                     "train_loss": [round(m["loss"], 3) for m in metrics], "folder": folder.name,
                     "seconds": round(time.perf_counter() - t0)}
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"{row:38s} test {r['test_acc']:5.1f}  train (last epoch) {r['train_acc_last_epoch']:5.1f}  "
              f"twice chance at epoch {rows[row]['reaches_twice_chance_at_epoch']}", flush=True)
    return rows


if __name__ == "__main__":
    main()
