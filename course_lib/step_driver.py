"""``bench steps``'s driver: one method's course-budget run, two short epochs, in a fresh interpreter.

``bench.step_times`` runs this file's text with ``python -c`` and a course tree on ``PYTHONPATH``,
so that ``course_lib`` is that tree's (this checkout, or another commit's). It asks the tree for
the run of notebook 10's comparison by name (``course.run``); a tree from before
``course_lib.course`` existed is asked the way it knew (``experiment.comparison_runs``). It
prints epoch 2's line of the training log, or ``{"missing": true}`` if the tree lacks the method.
"""
import json
import sys
import tempfile
from dataclasses import replace


def config(spec: dict):
    """The run's config with two epochs of ``spec["steps"]`` steps, or None if the tree has no such run."""
    short = {"epochs": 2, "steps_per_epoch": spec["steps"], **spec["changes"]}
    try:
        from course_lib import course
    except ImportError:  # an older tree
        from course_lib.experiment import comparison_runs, course_config

        runs = comparison_runs(course_config(quick=spec["mode"] != "full"))
        return replace(runs[spec["method"]][1], **short) if spec["method"] in runs else None
    if spec["method"] not in course.names("comparison"):
        return None
    mode = spec["mode"]
    if mode not in getattr(course, "MODES", ()):  # a tree from before the three budgets: a quick flag
        mode = mode != "full"
    return replace(course.run(spec["method"], mode).config, **short)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    cfg = config(spec)
    if cfg is None:
        print(json.dumps({"missing": True}))
        sys.exit(0)
    from course_lib.experiment import pretrain

    with tempfile.TemporaryDirectory() as out:
        pretrain(cfg, spec["data"], out, progress=False)
        with open(out + "/metrics.jsonl", encoding="utf-8") as f:
            print(f.read().splitlines()[-1])
