"""The command line contract, and that README, .ci/run, pyproject and environment.yml agree."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "course_lib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_synth_command(tmp_path):
    r = run_cli("synth", "--out", tmp_path, "--preset", "quick", "--train-per-class", 1, "--test-per-class", 1,
                "--min-frames", 20, "--max-frames", 24, "--frame-size", 48, "--no-progress")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["videos"] == 16 and out["config"]["size"] == 48 and len(out["classes"]) == 8
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 17  # header + 16 videos
    bad = run_cli("synth", "--out", tmp_path / "x", "--min-frames", 30, "--max-frames", 20)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --min-frames (30)") and bad.stderr.count("\n") == 1
    biased = run_cli("synth", "--out", tmp_path / "biased", "--preset", "quick", "--train-per-class", 1,
                     "--test-per-class", 1, "--min-frames", 20, "--max-frames", 24, "--frame-size", 48,
                     "--static-bias", 1, "--no-progress")
    assert biased.returncode == 0 and json.loads(biased.stdout)["config"]["static_bias"] == 1
    bad = run_cli("synth", "--out", tmp_path / "y", "--static-bias", 1.5)
    assert bad.returncode == 2 and bad.stderr == "error: --static-bias (1.5) must be between 0 and 1.\n"


def test_probe_command(tmp_path, indexed_video):
    good = indexed_video("cli.mp4", n=30)
    missing = tmp_path / "missing.mp4"
    r = run_cli("probe", good, missing)
    assert r.returncode == 1
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    assert first["num_frames"] == 30 and first["codec"] == "h264" and first["path"] == str(good)
    assert second["path"] == str(missing) and "file not found" in second["error"]
    assert r.stderr.strip() == f"error: {missing}: file not found."
    assert run_cli("probe", good).returncode == 0


def test_bench_decode_command(tmp_path, synth_quick):
    out = tmp_path / "bench.json"
    r = run_cli("bench", "decode", "--data", synth_quick.root, "--clips", 8, "--clip-len", 8, "--short-side", 48,
                "--out", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert json.loads(r.stdout) == result
    rows = {(row["what"], row["data"]): row for row in result["rows"]}
    assert len(rows) == 9 and all(row["clips_per_s"] > 0 for row in rows.values())
    jpeg = rows[("JPEG frames with PIL", "10 s videos")]  # the public code's way, measured in the same run
    seek, start = rows[("seek + decode (course_lib)", "10 s videos")], rows[("decode from the start", "10 s videos")]
    # both sides come from the same run and the ratio is theirs (up to the rounding of each)
    assert seek["ratio"] == pytest.approx(seek["clips_per_s"] / start["clips_per_s"], abs=0.02)
    assert jpeg["ratio"] == pytest.approx(jpeg["clips_per_s"] / start["clips_per_s"], abs=0.02)
    assert "clips/s" in r.stderr  # the table


def test_pretrain_then_evaluate(tmp_path, synth_quick):
    small = ["clip_len=4", "size=32", "batch_size=4", "num_workers=0", "test_clips=2"]
    r = run_cli("pretrain", "--method", "vcop", "--epochs", 1, "--data", synth_quick.root, "--out", tmp_path / "run",
                "--no-progress", *small)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["epochs_done"] == 1
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"checkpoint.pt", "metrics.jsonl", "summary.json",
                                                              "run.json"}
    r = run_cli("evaluate", "--checkpoint", tmp_path / "run" / "checkpoint.pt", "--protocol", "retrieval",
                "--data", synth_quick.root, "--out", tmp_path / "ret.json", "--no-progress", "num_workers=0")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "ret.json").read_text())
    assert [result[f"R@{k}"] for k in (1, 5, 10, 20, 50)] == sorted(result[f"R@{k}"] for k in (1, 5, 10, 20, 50))
    assert result["R@50"] == 100.0  # 8 test videos query 16 training videos: the top 50 holds every class
    r = run_cli("evaluate", "--random-init", "--protocol", "linear", "--data", synth_quick.root,
                "--out", tmp_path / "lin.json", "--no-progress", *small)
    assert r.returncode == 0, r.stderr
    assert 0 <= json.loads((tmp_path / "lin.json").read_text())["test_acc"] <= 100


def test_pretrain_and_evaluate_errors(tmp_path):
    r = run_cli("pretrain", "--method", "rotation", "--out", tmp_path, "colour=red")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown setting 'colour'")
    r = run_cli("evaluate", "--checkpoint", "x.pt", "--random-init", "--protocol", "knn", "--out", tmp_path / "o")
    assert r.returncode == 2 and "exactly one of --checkpoint" in r.stderr
    r = run_cli("evaluate", "--checkpoint", tmp_path / "none.pt", "--protocol", "knn", "--out", tmp_path / "o")
    assert r.returncode == 2 and "run.json: not found" in r.stderr
    r = run_cli("pretrain", "--method", "rotation", "--out", tmp_path, "--config", tmp_path / "missing.yaml")
    assert r.returncode == 2 and "missing.yaml: config file not found" in r.stderr
    r = run_cli("pretrain", "--method", "vcop", "--base", "moco", "--out", tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: --base only applies to the dualvar method, not vcop."
    r = run_cli("pretrain", "--method", "iic", "--out", tmp_path, "options.intra=flip")
    assert r.returncode == 2 and r.stderr.startswith("error: setting options.intra='flip' is not allowed: iic's intra "
                                                     "must be one of none, repeat, shuffle, reverse")


def readme_commands():
    text = (ROOT / "README.md").read_text()
    install = re.search(r"^(pip install -e \S+)\s*$", text, re.M).group(1)
    test = re.search(r"^(pytest)\s*$", text, re.M).group(1)
    return install, test


def test_ci_runs_the_readme_commands():
    install, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(install)}\s", ci, re.M) and re.search(rf"^{test}\s", ci, re.M)
    assert "venv" in ci


def test_environment_yml_installs_the_same_set():
    install, _ = readme_commands()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    # conda runs `pip install <each line>`: the same editable install with the dev extra as the README
    assert pip == [install.removeprefix("pip install ")]
    # and conda itself installs nothing else that could diverge from pyproject
    assert [d for d in deps if isinstance(d, str)] == ["python=3.11", "pip"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    assert {"torch", "torchvision", "av", "einops", "matplotlib", "ipywidgets", "jupyterlab", "nbval", "tqdm",
            "pyyaml"} <= names
    assert "pytest" in {re.split(r"[<>=!~ ]", d)[0] for d in project["optional-dependencies"]["dev"]}


def test_notebooks_are_committed_without_outputs():
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb_path in notebooks:
        nb = nbformat.read(nb_path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3", nb_path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, nb_path.name


def test_bench_train_counts_flops_and_measures_steps(capsys):
    from course_lib.bench import train_benchmark
    from course_lib.cli import main
    from course_lib.models import complexity, create_model

    r = train_benchmark(model="r3d_vcop", width=0.125, method="simclr", clip_len=4, size=32, batch=2, steps=1)
    fwd = complexity(create_model("r3d_vcop", width=0.125), (1, 3, 4, 32, 32))["gflops"]
    # a step is about 3 forward passes for each of the 2 clips of each video: the backward pass skips the
    # input gradient of the first convolution, and the head and loss add a little
    assert 0.8 <= r["gflops_per_step"] / (3 * fwd * 2 * 2) < 1.5
    assert r["clips_per_s"] == pytest.approx(2 * r["videos_per_s"], rel=0.01)
    assert r["achieved_tflops"] == pytest.approx(r["gflops_per_step"] / r["step_s"] / 1000, rel=0.01)
    assert r["ceiling_fraction"] is None and r["device"] == "cpu"  # no peak known for a CPU
    # the step split into phases (no data or transfer: the batch is made on the device)
    assert r["phase_ms"]["data"] == r["phase_ms"]["transfer"] == 0 and r["phase_ms"]["forward"] > 0
    assert sum(r["phase_ms"].values()) == pytest.approx(1000 * r["step_s"], rel=0.1)

    assert main(["bench", "train", "--device", "cpu", "--models", "r3d_vcop", "--batch", "2", "--repeats", "1",
                 "--clip-len", "4", "--size", "32"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert [row["what"] for row in result["rows"]] == ["r3d_vcop fp32", "r3d_vcop fp32 +cl3d"]  # CPU: no bf16
    assert "TFLOP/s" in out.err and "backward" in out.err


def test_bench_steps_runs_each_tree_in_its_own_process_and_alternates_them(synth_quick):
    """Two trees (here both this checkout) measured side by side: every method once per tree and round,
    the order flipped each round, phases where the tree logs them, and a speed-up near 1 for equal code."""
    from pathlib import Path

    import course_lib
    from course_lib.bench import format_steps, step_times

    here = str(Path(course_lib.__file__).resolve().parent.parent)
    seen = []  # what a cut-off run would have kept: the rows so far, after every run
    r = step_times(["rotation"], {"a": here, "b": here}, data=str(synth_quick.root), rounds=2, steps=2, mode="test",
                   changes={"num_workers": 0}, on_row=lambda rows: seen.append(len(rows)))
    assert [(x["tree"], x["round"]) for x in r["rows"]] == [("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    assert seen == [1, 2, 3, 4]
    assert all(x["ms_per_step"] > 0 and set(x["phase_ms"]) >= {"data", "forward", "backward"} for x in r["rows"])
    assert 0.3 < r["summary"]["rotation"]["speedup_b_over_a"] < 3
    assert len({x["loss"] for x in r["rows"]}) == 1  # the same run each time, in a fresh process
    assert "rotation" in format_steps(r) and "backward" in format_steps(r)


def test_bench_augment_compares_both_sides_and_breaks_down_the_ops():
    from course_lib.bench import augment_benchmark, format_table

    r = augment_benchmark(batch=4, clip_len=4, size=32, frames=(40, 48), repeats=1)
    batched, per_clip, *ops = r["rows"]
    assert batched["what"].startswith("batched") and per_clip["what"].startswith("per clip")
    # the ratio is the per-clip time over the batched time, i.e. the ratio of the two rates
    assert batched["ratio"] == pytest.approx(batched["clips_per_s"] / per_clip["clips_per_s"], rel=0.02, abs=0.01)
    names = [o["what"].strip() for o in ops]
    assert names == ["op: crop, resize, flip", "op: jitter: brightness", "op: jitter: contrast",
                     "op: jitter: saturation", "op: jitter: hue", "op: grayscale", "op: gaussian blur"]
    assert all(o["clips_per_s"] > 0 and o["data"] == "cpu block 4" for o in ops)
    assert "op: jitter: hue" in format_table(r)
