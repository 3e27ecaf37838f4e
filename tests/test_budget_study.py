"""notebooks/ablations/budget_study.py: the learning-per-CPU-minute study that picks the CPU default (issue 33)."""
import json
from dataclasses import replace

import pytest
import torch
from ablation_scripts import load_ablation, tiny_quick_course


def test_points_vary_one_factor_around_the_centre():
    study = load_ablation("budget_study")
    points = study.grid_points()
    assert points[0] == study.CENTRE and len({study.tag(p) for p in points}) == len(points)
    for p in points[1:]:
        assert sum(p[k] != study.CENTRE[k] for k in study.CENTRE) == 1
    assert study.parse_point("videos=2,epochs=1") == {**study.CENTRE, "videos": 2, "epochs": 1}
    with pytest.raises(SystemExit, match="'frames' is not a factor"):
        study.parse_point("frames=3")


def test_rows_train_a_subset_measure_it_and_resume(tmp_path, monkeypatch):
    from course_lib.data import Manifest, builtin_dataset, synth
    from course_lib.evaluate import frozen_features, linear_probe
    from course_lib.experiment import load_backbone

    study = load_ablation("budget_study")
    tiny_quick_course(monkeypatch, tmp_path / "data")
    monkeypatch.setitem(synth.PRESETS, "default", replace(synth.PRESETS["quick"], train_per_class=3))
    out = tmp_path / "rows.json"
    args = ["--out", str(out), "--point", "videos=2,epochs=1,size=32,clip_len=8", "--methods", "supervised"]
    rows = study.main(args)
    assert sorted(rows) == ["random_init videos2-epochs1-size32-clip_len8-width0.25 seed0",
                            "supervised videos2-epochs1-size32-clip_len8-width0.25 seed0"]
    row = rows["supervised videos2-epochs1-size32-clip_len8-width0.25 seed0"]
    assert row["cpu_seconds"] > 0 and row["threads"] == 1 and (row["videos"], row["epochs"], row["size"]) == (2, 1, 32)
    assert all(0 < r["eval_seconds"] < 60 for r in rows.values())  # the probes' own time, not the training's

    # trained on the first two videos of each class, probed on them, tested on every test video
    folder = tmp_path / "data" / "runs" / "study" / study.tag(study.parse_point("videos=2,epochs=1,size=32,clip_len=8"))
    subset = Manifest.load(tmp_path / "data" / "runs" / "study" / "videos2")
    full = builtin_dataset(quick=False, progress=False)
    assert all(n == 2 for n in subset.counts()["train"].values())
    assert subset.counts()["test"] == full.counts()["test"]
    backbone, cfg = load_backbone(folder / "supervised-seed0")
    assert (cfg.clip_len, cfg.size, cfg.epochs, cfg.method) == (8, 32, 1, "supervised")
    torch.manual_seed(0)
    a, ya, b, yb = frozen_features(backbone, cfg, subset, torch.device("cpu"))
    assert len(ya) == 2 * len(full.classes) and row["linear"] == round(linear_probe(a, ya, b, yb)["test_acc"], 2)

    line = next(x for x in study.table(rows).splitlines() if x.startswith("| 2 | 1 | 32 | 8 | 0.25 |"))
    assert f"| {row['linear']:.1f} |" in line  # the table reads the rows

    # a training interrupted before it finished is trained again from the start, so its CPU time is whole
    partial = folder / "supervised-seed1"
    partial.mkdir()
    (partial / "checkpoint.pt").write_bytes(b"an unfinished run")
    again = study.measure("supervised", study.parse_point("videos=2,epochs=1,size=32,clip_len=8"), 1,
                          tmp_path / "data" / "runs" / "study" / "videos2" / "manifest.jsonl",
                          tmp_path / "data" / "runs" / "study")
    assert (partial / "summary.json").exists() and again["cpu_seconds"] > 0.5 * row["cpu_seconds"]

    # a second call resumes from the file; the figure is drawn from it
    monkeypatch.setattr(study, "measure", lambda *a, **k: pytest.fail("measured a row the file holds"))
    assert study.main(args) == rows == json.loads(out.read_text())
    study.main(["--out", str(out), "--plot", str(tmp_path / "study.png")])
    assert (tmp_path / "study.png").stat().st_size > 0
