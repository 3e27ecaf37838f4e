"""notebooks/ablations/pretrain_flip.py: what a pretraining flip does to the direction of motion (issue 15's note)."""
import json

import pytest
import torch
from ablation_scripts import load_ablation, tiny_quick_course
from torch import nn


class Columns(nn.Module):
    """A feature that reads where the brightness sits along the width: a flip changes it."""

    def forward(self, x):  # N x C x T x H x W -> N x W
        return x.mean((1, 2, 3)) - x.mean((1, 2, 3, 4))[:, None]


class Mean(nn.Module):
    """A feature a flip leaves unchanged: the clip's mean colour."""

    def forward(self, x):  # N x C x T x H x W -> N x C
        return x.mean((2, 3, 4))


def test_mirror_similarity_and_the_mirrored_pairs():
    from course_lib.data import SYNTH_CLASSES
    from course_lib.evaluate import mirror_pairs, mirror_similarity
    pairs = mirror_pairs(list(SYNTH_CLASSES))
    assert sorted(tuple(sorted(SYNTH_CLASSES[k] for k in p)) for p in pairs) == [
        ("move_left", "move_right"), ("rotate_ccw", "rotate_cw")]
    assert mirror_pairs(["move_up", "move_down"]) == []

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 250, 16).round().to(torch.uint8)  # brighter to the right (room for the noise)
    clips = ramp.expand(4, 3, 2, 8, 16).clone()
    clips[:2] += torch.randint(0, 5, (2, 3, 2, 8, 16), generator=g, dtype=torch.uint8)
    assert mirror_similarity(Mean(), clips) == pytest.approx(1.0)
    assert mirror_similarity(Columns(), clips) < -0.9  # the mirror image reads the ramp backwards


def test_direction_probe_reads_only_what_tells_a_pair_apart():
    from course_lib.evaluate import direction_probe
    g = torch.Generator().manual_seed(0)
    ya, yb = torch.arange(40) % 4, torch.arange(20) % 4
    pairs = [(0, 1), (2, 3)]
    side = lambda y: ((y % 2) * 2 - 1).float()[:, None]  # the pair member: the feature a flip would change
    kind = lambda y: (y // 2).float()[:, None]  # which pair: a feature a flip keeps
    noise = lambda n: 0.1 * torch.randn(n, 2, generator=g)
    sees = direction_probe(torch.cat([side(ya), kind(ya)], 1) + noise(40), ya,
                                  torch.cat([side(yb), kind(yb)], 1) + noise(20), yb, pairs)
    blind = direction_probe(torch.cat([kind(ya), kind(ya)], 1) + noise(40), ya,
                                   torch.cat([kind(yb), kind(yb)], 1) + noise(20), yb, pairs)
    assert sees == 100.0 and blind <= 70.0


def test_pretrain_flip_rows_runs_and_resume(tmp_path, monkeypatch):
    from course_lib import course, results
    module = load_ablation("pretrain_flip")

    tiny_quick_course(monkeypatch, tmp_path / "data")
    out = tmp_path / "rows.json"
    args = ["--out", str(out), "--methods", "simclr", "--references", "random_init"]
    rows = module.main(args)
    assert list(rows) == ["random init", "simclr, flip 0.5", "simclr, no flip"]
    assert rows["simclr, flip 0.5"]["run"] == "simclr"  # notebook 04's run, shared with notebook 10
    trained = {row: json.loads((course.run(rows[row]["run"]).folder / "run.json").read_text())
               for row in ("simclr, flip 0.5", "simclr, no flip")}
    settings = {row: t["method_settings"]["augment"] for row, t in trained.items()}  # what the method trained with
    assert settings["simclr, flip 0.5"]["flip"] == 0.5 and settings["simclr, no flip"]["flip"] == 0.0
    assert {**settings["simclr, no flip"], "flip": 0.5} == settings["simclr, flip 0.5"]  # nothing else changed
    assert trained["simclr, no flip"]["options"] == {"temperature": 0.1, "augment": {"flip": 0.0}}
    for r in rows.values():
        assert -1 <= r["cos(clip, mirrored clip)"] <= 1 and 0 <= r["direction"] <= 100 and 0 <= r["linear"] <= 100

    # a second call resumes from the file: nothing is trained or read again
    monkeypatch.setattr(module, "measure", lambda *a, **k: pytest.fail("measured a row the file holds"))
    assert module.main(args) == rows == json.loads(out.read_text())
    out.unlink()  # without the file, each run's cached scores are read: nothing is trained or measured
    monkeypatch.setattr(module, "measure", results.measure)
    monkeypatch.setattr(results, "SCORES", {})
    assert {k: {**v, "seconds": 0} for k, v in module.main(args).items()} == {k: {**v, "seconds": 0} for k, v in rows.items()}
    with pytest.raises(SystemExit):
        module.main(["--out", str(out), "--methods", "dualvar"])  # DualVar's views never flip


def test_the_flipping_methods_are_those_whose_views_flip_in_notebook_10():
    from course_lib import course
    from course_lib.methods.registry import resolved_options
    flips = {name for name in course.names("comparison") if (cfg := course.run(name, "test").config).method and
             (resolved_options(cfg.method, cfg.options).get("augment") or {}).get("flip", 0) > 0}
    assert set(course.FLIPPING) == flips
