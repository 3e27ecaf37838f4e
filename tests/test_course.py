"""course.py owns the course's budgets and named runs; results.py measures them into result files."""
import json
from dataclasses import asdict, replace

import pytest
import torch
from ablation_scripts import tiny_quick_course

from course_lib import course, results
from course_lib.cli import main


@pytest.mark.parametrize("mode", course.MODES)
def test_every_named_run_is_a_valid_run_with_a_folder_of_its_own(mode, tmp_path):
    folders = {}
    for name in course.RUNS:
        run = course.run(name, mode, runs=tmp_path)
        run.config.check()  # every setting and option passes its rule at this budget
        spec = course.spec(name)
        if spec.method is None:
            assert run.folder is None
            continue
        assert run.config.method == spec.method and run.config.seed == spec.seed
        family = spec.folder.split("/")[1] in ("seeds", "debias")  # a family's runs sit in a folder of their own
        assert (run.folder.parent.parent.parent if family else run.folder.parent.parent) == tmp_path
        folders.setdefault(run.folder, []).append(name)
    assert all(len(v) == 1 for v in folders.values()), {k: v for k, v in folders.items() if len(v) > 1}


def test_the_budget_is_shared_and_each_run_changes_only_what_it_declares():
    for mode in course.MODES:
        base = course.budget(mode)
        for name in course.names("comparison"):
            cfg = course.run(name, mode).config
            changed = {k for k, v in asdict(cfg).items() if v != getattr(base, k)}
            own = course.METHOD_BUDGETS.get(mode, {}).get(course.spec(name).method, {})  # a cheap method's share
            assert changed <= {"method", "options", *course.spec(name).changes, *own}, (name, changed)
            assert all(getattr(cfg, k) == v for k, v in own.items())
            twin = course.run(f"twin-{name}", mode)
            assert twin.config == cfg and twin.spec.data == "twin"  # the same run on the other dataset
    assert (course.budget("full").epochs, course.budget("full").size, course.budget("full").clip_len) == (30, 64, 16)
    assert course.run("vcop", "full").config.stride == 1 and course.run("videomae", "full").config.model == "vit_course"
    # the command line's default is the notebooks' budget, a method's own share included
    for mode in course.MODES:
        for method in ("speed", "iic"):
            assert course.default_config(mode, method=method) == replace(course.run(method, mode).config, options={})
    assert course.run("speed", "cpu").config.epochs == 2 * course.budget("cpu").epochs


def test_a_changed_run_trains_beside_the_declared_one(tmp_path):
    plain, short = course.run("simclr", "test", runs=tmp_path), course.run("simclr", "test", runs=tmp_path, epochs=1)
    assert short.config == replace(plain.config, epochs=1)
    assert short.folder.parent == plain.folder.parent and short.folder != plain.folder
    with pytest.raises(ValueError, match="unknown run 'nope'"):
        course.run("nope")


def test_seeds_are_runs_of_their_own_and_make_the_band(tmp_path, monkeypatch):
    assert course.seeds_of("simclr") == ["simclr", "simclr-seed1", "simclr-seed2"]
    assert course.spec("twin-simclr-seed2").data == "twin" and course.spec("twin-simclr-seed2").seed == 2
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path)
    for name, linear in (("simclr", 13.3), ("simclr-seed1", 10.0), ("simclr-seed2", 24.2)):
        (tmp_path / "full").mkdir(exist_ok=True)
        (tmp_path / "full" / f"{name}.json").write_text(json.dumps({"scores": {"linear": linear}}))
    assert results.band("simclr", "linear") == (10.0, 24.2)
    assert results.band("moco", "linear") is None and course.score("simclr-seed1", "linear") == 10.0


def test_a_record_is_measured_once_written_and_kept(tmp_path, monkeypatch):
    tiny_quick_course(monkeypatch, tmp_path / "data")
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path / "results")
    small = course.run("speed", "test", epochs=1)
    record = results.measure("speed", run=small)
    assert {"run", "method", "mode", "seed", "config", "scores", "log", "seconds"} <= set(record)
    assert (record["run"], record["method"], record["mode"], record["seed"]) == ("speed", "speed", "test", 0)
    assert record["config"]["epochs"] == 1 and record["config"]["method_settings"]["strides"] == [1, 2, 4, 8]
    assert [r["epoch"] for r in record["log"]] == [1] and record["seconds"] == pytest.approx(record["log"][0]["seconds"], abs=0.1)
    assert set(record["scores"]) >= {"linear", "knn", "R@1", "R@50", "attentive", "color", "finetune"}
    assert 0 <= record["scores"]["R@1"] <= record["scores"]["R@5"] <= record["scores"]["R@50"] <= 100
    # asked again: read from the cache beside the run, nothing measured
    monkeypatch.setattr(results, "SCORES", {})
    assert results.measure("speed", run=small) == record
    # a group whose protocol changed (its version raised) is measured again, and it alone
    raised = results.VERSIONS["attentive"] + 1
    monkeypatch.setitem(results.VERSIONS, "attentive", raised)
    monkeypatch.setitem(results.SCORES, "attentive", lambda s: {"attentive": 99.0})
    again = results.measure("speed", run=small)
    assert again["scores"] == {**record["scores"], "attentive": 99.0} and again["groups"]["attentive"] == raised
    # a changed checkpoint is measured again
    ckpt = torch.load(small.folder / "checkpoint.pt", weights_only=True)
    ckpt["method"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["method"].items()}
    torch.save(ckpt, small.folder / "checkpoint.pt")
    with pytest.raises(KeyError):
        results.measure("speed", run=small)


def test_a_group_measured_later_reads_the_runs_features_from_disk_until_the_checkpoint_changes(tmp_path, monkeypatch):
    tiny_quick_course(monkeypatch, tmp_path / "data")
    small = course.run("simclr", "test", epochs=1)
    first = results.measure("simclr", groups=("frozen",), run=small)
    extracted = []
    real = results.frozen_features
    monkeypatch.setattr(results, "frozen_features", lambda *a, **k: extracted.append(a[2].root) or real(*a, **k))
    # another process (a later notebook) measures two more groups on the same features: nothing is decoded again
    later = results.measure("simclr", groups=("attributes", "direction"), run=small)
    assert extracted == [] and later["scores"]["linear"] == first["scores"]["linear"] and "color" in later["scores"]
    # the twin group reads the plain data's features from the same cache and extracts only the twin's
    twin = results.measure("simclr", groups=("twin",), run=small)
    assert len(extracted) == 1 and "bias" in str(extracted[0])
    assert twin["scores"]["color"] == later["scores"]["color"]  # the same features, the same probe
    # a fresh measurement extracts again, and the kept features gave the scores a fresh extraction gives
    fresh = results.measure("simclr", groups=("frozen",), run=small, fresh=True)
    assert fresh["scores"] == first["scores"] and len(extracted) == 2
    # read by a new scoring: the kept features; data regenerated in place (a video file changed, the same paths
    # and count) is other data; an unreadable file is extracted again, not an error
    import os

    def features():
        return results.Scoring(small, torch.device("cpu"), course.budget("test"), small.dataset()).features()
    assert torch.equal(features()[0], real(small.backbone(), course.budget("test"), small.dataset(), "cpu")[0])
    assert len(extracted) == 2
    video = small.dataset().path(small.dataset().entries[0])
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    features()
    assert len(extracted) == 3
    for f in (results._cache_file(small).parent / "features").glob("*.pt"):
        f.write_bytes(b"cut short")
    features()
    assert len(extracted) == 4
    # a changed checkpoint has other features: they are extracted again
    ckpt = torch.load(small.folder / "checkpoint.pt", weights_only=True)
    ckpt["method"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in ckpt["method"].items()}
    torch.save(ckpt, small.folder / "checkpoint.pt")
    extracted.clear()
    results.measure("simclr", groups=("frozen",), run=small)
    assert len(extracted) == 1


def test_the_results_command_writes_each_trained_run_and_keeps_a_file_whose_run_is_unchanged(tmp_path, monkeypatch,
                                                                                             capsys):
    tiny_quick_course(monkeypatch, tmp_path / "data")
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path / "results")
    assert main(["results", "--mode", "test", "--runs", "random_init,rotation"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"mode": "test", "runs": 2, "written": 1, "not trained": 1}  # rotation was never trained
    written = json.loads((tmp_path / "results" / "test" / "random_init.json").read_text())
    assert written["run"] == "random_init" and written["config"]["model"] == "r3d_vcop" and written["log"] == []
    assert written == course.result("random_init", "test")
    assert main(["results", "--mode", "test", "--runs", "random_init"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kept"] == 1
    assert main(["results", "--runs", "nope"]) == 2 and "unknown run 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("settings, message", [
    (["options.temperature=0"], "setting options.temperature=0 is not allowed: simclr's temperature must be a number > 0."),
    (["options.temperature=-1"], "setting options.temperature=-1 is not allowed"),
    (["options.dim=0"], "setting options.dim=0 is not allowed: simclr's dim must be an integer >= 1."),
    (["size=7"], "setting size=7 is not allowed: model r3d_vcop needs frames of at least 16 px"),
])
def test_bad_option_values_are_one_error_line(settings, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "test")
    assert main(["pretrain", "--method", "simclr", *settings, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "checkpoint.pt").exists()


def test_settings_may_stand_before_between_and_after_the_options(tmp_path, monkeypatch):
    from course_lib import experiment
    monkeypatch.setenv("COURSE_MODE", "test")
    seen = []
    monkeypatch.setattr(experiment, "pretrain", lambda cfg, data, out, progress: seen.append((cfg, out)) or
                        {"final": None, "epochs_done": 0})
    for argv in (["--method", "simclr", "--out", "X", "epochs=1", "lr=0.1"],
                 ["--method", "simclr", "epochs=1", "--out", "X", "lr=0.1"],
                 ["epochs=1", "--method", "simclr", "lr=0.1", "--out", "X"]):
        assert main(["pretrain", *argv]) == 0
    assert len(seen) == 3 and all(s == seen[0] for s in seen)
    assert (seen[0][0].epochs, seen[0][0].lr, seen[0][1]) == (1, 0.1, "X")


def test_option_rules_cover_every_method_and_refuse_what_the_constructor_would():
    from course_lib.methods import list_methods
    from course_lib.methods.registry import _defaults, method_class, option_rule
    from course_lib.settings import SettingError
    for name in list_methods():  # every method's own defaults pass its rules
        cls = method_class(name)
        for option, default in _defaults(cls).items():
            rule = option_rule(cls, option)
            if rule is not None and option != "augment":
                rule(option, list(default) if isinstance(default, tuple) else default)
    for name, option, value in (("byol", "rho", 1), ("iic", "intra", "sideways"), ("videomae", "mask_ratio", 1.0),
                                ("moco", "momentum", 1.5), ("dualvar", "base", "byol"), ("cvrl", "interval", "flat")):
        with pytest.raises(SettingError, match=f"options.{option}="):
            course.default_config("test", method=name, options={option: value}, **(course.VIT if name == "videomae" else {}))


def test_a_compared_run_ships_its_backbone_in_fp16_and_a_line_loads_it(tmp_path, monkeypatch):
    tiny_quick_course(monkeypatch, tmp_path / "data")
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path / "results")
    assert course.reference_backbone("speed", "test") is None  # nothing committed yet
    run = course.run("speed", "test", epochs=1)
    run.train()
    monkeypatch.setattr(course, "run", lambda name, mode=None, **kw: run)  # write() asks for the declared run
    assert results.write("speed", "test")[0] == "written" and not course.weights_path("speed", "test").exists()
    assert results.write("speed", "test", weights=True)[0] == "kept"  # only full mode ships weights by default
    saved = torch.load(course.weights_path("speed", "test"), weights_only=True)
    assert saved["identity"] == course.result("speed", "test")["identity"]  # the weights the result file measured
    assert all(v.dtype == torch.float16 for v in saved["state"].values() if v.is_floating_point())
    mine, cfg = course.reference_backbone("speed", "test")
    assert cfg == run.config
    original = run.backbone().eval()
    for (k, a), b in zip(original.state_dict().items(), mine.state_dict().values()):
        assert a.dtype == b.dtype and torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), k
    x = torch.rand(2, 3, cfg.clip_len, cfg.size, cfg.size)
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(original(x), mine(x)).min() > 0.999
    # a file whose run is unchanged is kept, and missing weights are written again
    course.weights_path("speed", "test").unlink()
    assert results.write("speed", "test", weights=True)[0] == "kept" and course.weights_path("speed", "test").exists()


def test_the_committed_reference_weights_match_their_result_files_and_stay_small():
    folder = course.results_dir() / "full" / "weights"
    files = sorted(folder.glob("*.pt"))
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20
    for f in files:
        saved = torch.load(f, map_location="cpu", weights_only=True)
        record = course.result(f.stem, "full")
        assert record is not None and saved["identity"] == record["identity"], f.name
        assert f.stem in course.COMPARISON and saved["config"]["epochs"] == record["config"]["epochs"]


def test_the_reference_is_read_live_and_reproduces_its_result_file(tmp_path, monkeypatch):
    tiny_quick_course(monkeypatch, tmp_path / "data")
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path / "results")
    run = course.run("speed", "test", epochs=1)
    run.train()
    declared = course.run
    monkeypatch.setattr(course, "run", lambda name, mode=None, **kw: run if name == "speed" else declared(name, mode, **kw))
    results.write("speed", "test", weights=True)  # the result file and the fp16 weights, as a reference at "test"
    assert results.reference_features("speed", "test", reference="full") is None  # none committed at full
    live = results.reference_scores("speed", "test", reference="test")
    committed = course.result("speed", "test")["scores"]
    one_video = 100 / len(course.builtin_dataset(True, progress=False).split("test"))
    assert set(live) == {"linear", "knn", *(f"R@{k}" for k in results.RETRIEVAL_KS)}
    assert all(abs(live[k] - committed[k]) <= one_video + 1e-6 for k in live), (live, committed)
    cached = next((tmp_path / "data" / "runs" / "test" / "reference-test").glob("speed-*.pt"))
    monkeypatch.setattr(results, "frozen_features", None)  # a second call reads the cache
    assert results.reference_scores("speed", "test", reference="test") == live and cached.exists()
    # "cached": the learner's runs the cache holds are measured, nothing is trained
    rows = results.compare(["speed", "rotation"], ("linear",), mode="test", mine="cached")
    assert rows[0]["mine"]["linear"] == committed["linear"] and rows[1]["mine"] == {}


def test_a_verdict_calls_a_difference_noise_within_the_measured_seed_spread(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path)
    (tmp_path / "full").mkdir()
    scores = {"iic": {"linear": 60.0}, "iic-no_intra": {"linear": 40.0}, "cvrl": {"linear": 30.0},
              "cvrl-uniform": {"linear": 26.0}}
    # no seeds at this budget: two test videos are the floor
    assert results.noise(["cvrl"], "linear", "full", test_videos=120) == (pytest.approx(100 / 60),
                                                                           "no seeds run at full: two test videos")
    assert "holds" in results.verdict(scores, "cvrl", "cvrl-uniform", "linear")
    for name, linear in (("iic", 43.3), ("iic-seed1", 54.2), ("iic-seed2", 71.7)):
        (tmp_path / "full" / f"{name}.json").write_text(json.dumps({"scores": {"linear": linear}}))
    # IIC's own spread (28.4 points) swallows a 20-point difference, and is the widest one for a run without seeds
    assert results.verdict(scores, "iic", "iic-no_intra", "linear").startswith("iic vs iic-no_intra: +20.0 points of "
                                                                              "linear, within noise (IIC's seed spread")
    limit, why = results.noise(["cvrl", "cvrl-uniform"], "linear")
    assert limit == pytest.approx(28.4) and why == "the widest seed spread measured at full (IIC's)"
    assert "reversed" in results.verdict({"rotation": {"R@1": 10.0}, "vcop": {"R@1": 50.0}}, "rotation", "vcop", "R@1")
    assert results.verdict(scores, "iic", "byol", "linear") == "iic vs byol: linear not measured"


def test_the_learners_rows_carry_the_committed_results_of_their_own_budget_too(tmp_path, monkeypatch):
    """At the CPU default a results cell shows the learner's run, the committed CPU-default reference with its
    seed band there, and the full-mode reference with its own."""
    import matplotlib
    matplotlib.use("Agg")
    from course_lib import viz
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path)
    for mode, values in (("full", {"iic": 43.3, "iic-seed1": 54.2}), ("cpu", {"iic": 35.0, "iic-seed1": 50.0})):
        (tmp_path / mode).mkdir()
        for name, linear in values.items():
            (tmp_path / mode / f"{name}.json").write_text(json.dumps({"scores": {"linear": linear}}))
    rows = results.compare(["iic", "cvrl"], ("linear",), mode="cpu", mine=False)
    assert (rows[0]["here"], rows[0]["band_here"]) == ({"linear": 35.0}, {"linear": (35.0, 50.0)})
    assert (rows[0]["reference"], rows[0]["band"]) == ({"linear": 43.3}, {"linear": (43.3, 54.2)})
    assert rows[1]["here"] == {} and rows[1]["reference"] == {}
    text = results.table(rows, ("linear",), mode="cpu")
    assert "linear cpu ref" in text and "35.0 [35-50]" in text and "43.3 [43-54]" in text
    ax = viz.compare_plot(rows, "linear", mode="cpu")  # nothing of the learner's: the two references, two runs each
    assert len(ax.patches) == 4 and "reference (cpu)" in [t.get_text() for t in ax.get_legend().get_texts()]
    full = results.compare(["iic"], ("linear",), mode="full", mine=False)  # at the reference's own budget: one bar
    assert full[0]["here"] == {} and len(viz.compare_plot(full, "linear", mode="full").patches) == 1
    # a cosine near 1 keeps three decimals (and its band two), not 1.0 for every run; its axis is not in %
    for mode, values in (("full", {"iic": 0.9883, "iic-seed1": 0.9712}), ("cpu", {"iic": 0.9951})):
        for name, cos in values.items():
            (tmp_path / mode / f"{name}.json").write_text(json.dumps({"scores": {"cos reversed": cos}}))
    rows = results.compare(["iic"], ("cos reversed",), mode="cpu", mine=False)
    text = results.table(rows, ("cos reversed",), mode="cpu")
    assert "0.995" in text and "0.988 [0.97-0.99]" in text
    assert viz.compare_plot(rows, "cos reversed", mode="cpu").get_ylabel() == "cos reversed"


def test_the_fix_table_reads_one_file_per_method_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path)
    (tmp_path / "full").mkdir()
    for name, linear in (("cvrl", 15.0), ("cvrl-residual", 61.7), ("dualvar-residual_both", 60.0),
                         ("random_init", 15.8)):
        (tmp_path / "full" / f"{name}.json").write_text(json.dumps({"scores": {"linear": linear}}))
    text = results.debias_grid("linear")
    assert "| CVRL | 15.0 | - | 61.7 | - | - |" in text  # none, intra, residual, be, fame
    assert "| DualVar | - | - | 60.0 | - | - |" in text  # DualVar on residual frames is notebook 07's run
    assert "| BYOL | - |  | - | - | - |" in text  # BYOL has no negatives: no intra column
    assert "random init: 15.8" in text and "supervised: not measured" in text
    assert results.markers("cpu")[0] != results.markers("full")[0] == results.REPORT_BEGIN


def test_the_fix_grid_is_read_against_each_fixs_own_floor(tmp_path, monkeypatch):
    """Notebook 10's picture of every method x fix: colour = score above random init, or above a random network on
    residual frames for the residual fix; not measured is empty, a fix that does not apply has no cell."""
    import matplotlib
    matplotlib.use("Agg")
    from course_lib import viz
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path)
    (tmp_path / "full").mkdir()
    for name, linear in (("cvrl", 15.0), ("cvrl-residual", 61.7), ("cvrl-be", 17.5), ("random_init", 15.8),
                         ("random_init-residual", 27.5)):
        (tmp_path / "full" / f"{name}.json").write_text(json.dumps({"scores": {"linear": linear}}))
    scores = results.debias_scores("linear")
    assert scores["cvrl", "residual"] == 61.7 and scores["simclr", "be"] is None and ("byol", "intra") not in scores
    ax = viz.debias_plot("linear")
    grid = ax.get_images()[0].get_array()
    methods = [t.get_text() for t in ax.get_yticklabels()]
    fixes = [t.get_text() for t in ax.get_xticklabels()]
    row = methods.index("CVRL")
    assert grid[row, fixes.index("residual")] == pytest.approx(61.7 - 27.5)  # against its own floor
    assert grid[row, fixes.index("be")] == pytest.approx(17.5 - 15.8)
    assert grid.mask[methods.index("SimCLR"), fixes.index("be")]  # not measured: no colour
    assert "61.7" in [t.get_text() for t in ax.texts]


def test_each_fixed_method_trains_on_the_twin_too_and_is_read_on_its_own_input(monkeypatch):
    """The residual fix on the static-bias twin: the same run as on the plain data but for its data, and its twin
    probes read residual frames, as it was trained."""
    from types import SimpleNamespace
    from course_lib import evaluate
    for method, name in course.DEBIAS_TWINS.items():
        fixed, twin = course.run(course.DEBIAS_RUNS[method, "residual"], "full"), course.run(name, "full")
        assert twin.config == fixed.config and (twin.spec.data, fixed.spec.data) == ("twin", "plain")
        assert twin.folder != fixed.folder and twin.spec.scores == ("twin",)
    seen = []

    def features(backbone, cfg, manifest, device, *, view="rgb", **kw):
        seen.append(view)
        g = torch.Generator().manual_seed(len(seen))
        return torch.randn(8, 4, generator=g), torch.arange(8) % 2, torch.randn(6, 4, generator=g), torch.arange(6) % 2

    monkeypatch.setattr(evaluate, "frozen_features", features)
    no_attrs = SimpleNamespace(split=lambda _: SimpleNamespace(entries=[]))
    evaluate.bias_probes(None, None, no_attrs, no_attrs, "cpu", attributes=(), view="residual")
    assert seen == ["residual", "residual"]
