"""notebooks/ablations/twin_seeds.py: the seed-spread measurement of the static-bias twin (issue 15)."""
import json

import torch
from ablation_scripts import load_ablation, tiny_quick_course


def test_twin_seeds_rows_runs_and_resume(tmp_path, monkeypatch):
    from course_lib import course
    from course_lib.data import builtin_dataset
    from course_lib.evaluate import bias_probes
    from course_lib.models import create_model

    tiny_quick_course(monkeypatch, tmp_path / "data")
    out = tmp_path / "rows.json"
    args = ["--out", str(out), "--seeds", "0", "--no-colour-seeds", "--random-seeds", "1",
            "--epochs", "1"]
    rows = load_ablation("twin_seeds").main(args)
    assert set(rows) == {"random init, seed 0", "colour statistics (6 numbers)", "simclr on twin, seed 0", "simclr on twin, seed 0, head",
                         "simclr on plain, seed 0", "simclr on plain, seed 0, head"}

    # the random init is notebook 04's (seed 0 before the backbone is made)
    plain, twin = builtin_dataset(progress=False), builtin_dataset(static_bias=1, progress=False)
    base = course.budget("test")
    torch.manual_seed(0)
    expected = bias_probes(create_model(base.model, width=base.width), base, plain, twin, "cpu")
    assert {k: rows["random init, seed 0"][k] for k in expected} == expected

    # a shortened run trains beside notebook 04's runs, never in them, and on the data it names
    assert not course.run("twin-simclr").folder.exists() and not course.run("simclr").folder.exists()
    twin_run = course.run("twin-simclr", epochs=1).folder
    assert twin_run.parent == course.run("twin-simclr").folder.parent
    assert json.loads((twin_run / "run.json").read_text())["data"] == str(twin.root)
    assert json.loads((course.run("simclr", epochs=1).folder / "run.json").read_text())["data"] == str(plain.root)

    # a second call resumes from the file: nothing is trained or measured again
    stamp = (twin_run / "checkpoint.pt").stat().st_mtime_ns
    assert load_ablation("twin_seeds").main(args) == rows == json.loads(out.read_text())
    assert (twin_run / "checkpoint.pt").stat().st_mtime_ns == stamp
