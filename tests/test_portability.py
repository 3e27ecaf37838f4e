"""Linux, macOS and Windows: CPU count, paths with spaces and non-ASCII characters, file names
Windows accepts, atomic checkpoints under Windows semantics, explicit text encodings; device
selection (CUDA, Apple MPS, CPU) and the mode that fits the machine, with mocked hardware."""
import ast
import contextlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import course_lib
from course_lib.course import budget, default_config
from course_lib import machine, runtime
from course_lib.cli import main
from course_lib.data.synth import PRESETS, ensure, generate
from course_lib.settings import SettingError
from course_lib.train import load_checkpoint, save_atomic

TINY = replace(PRESETS["quick"], train_per_class=2, test_per_class=1, min_frames=24, max_frames=32)


def hide_affinity(monkeypatch):
    """Make this Python look like macOS or Windows: no sched_getaffinity (nor 3.13's process_cpu_count)."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)


def test_usable_cpus_without_affinity(monkeypatch):
    hide_affinity(monkeypatch)
    assert runtime.usable_cpus() == os.cpu_count()
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable" is allowed by the docs
    assert runtime.usable_cpus() == 1 and runtime.default_workers() == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only: a CPU affinity mask")
def test_usable_cpus_follows_the_affinity_mask(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert runtime.usable_cpus() == 1


def test_builtin_dataset_generates_with_default_workers_without_affinity(monkeypatch, tmp_path):
    hide_affinity(monkeypatch)
    manifest = generate(tmp_path / "synth", TINY, progress=False)  # workers=None: the default
    info = json.loads((tmp_path / "synth" / "synth.json").read_text(encoding="utf-8"))
    assert info["workers"] == min(os.cpu_count(), 8)
    assert len(manifest) == 8 * 3 and all(manifest.path(e).stat().st_size > 0 for e in manifest)


WINDOWS_FORBIDDEN = re.compile(r'[<>:"\\|?*\x00-\x1f]')
WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def windows_problems(root: Path) -> list[str]:
    """Names under root that Windows would refuse."""
    bad = []
    for p in root.rglob("*"):
        name = p.name
        if WINDOWS_FORBIDDEN.search(name) or name.endswith((" ", ".")) or name.split(".")[0].lower() in WINDOWS_RESERVED:
            bad.append(str(p.relative_to(root)))
    return bad


@pytest.mark.slow
def test_spaces_and_non_ascii_in_the_data_and_run_folders(monkeypatch, tmp_path, capsys):
    """COURSE_DATA and the run folder may hold spaces and non-ASCII characters; every name the
    course writes there is one Windows accepts."""
    data = tmp_path / "dätä földer ✓"
    monkeypatch.setenv("COURSE_DATA", str(data))
    manifest = ensure(quick=True, cfg=TINY, progress=False)  # the built-in dataset, under $COURSE_DATA
    assert manifest.root == data / "synth-quick" and ensure(quick=True, cfg=TINY, progress=False).root == manifest.root
    run = tmp_path / "rün ölder" / "my run (1)"
    small = ["width=0.125", "clip_len=4", "size=28", "batch_size=4", "num_workers=0", "steps_per_epoch=2",
             "test_clips=2"]
    for _ in range(2):  # trains, then finds the finished run and loads it
        assert main(["pretrain", "--method", "simclr", "--out", str(run), "--no-progress", "--epochs", "1",
                     *small]) == 0
    capsys.readouterr()
    result = run / "retrieval ✓.json"
    assert main(["evaluate", "--checkpoint", str(run), "--protocol", "retrieval", "--out", str(result),
                 "--no-progress", "num_workers=0", "test_clips=2"]) == 0
    assert json.loads(result.read_text(encoding="utf-8"))["data"] == str(manifest.root)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert windows_problems(data) == [] and windows_problems(tmp_path / "rün ölder") == []


@pytest.mark.skipif(os.name == "nt", reason="Windows itself refuses these names")
def test_windows_name_check_catches_bad_names(tmp_path):
    for name in ("a:b.json", "NUL.txt", "trailing.", "ok.mp4", "com1"):
        (tmp_path / name).touch()
    assert sorted(windows_problems(tmp_path)) == ["NUL.txt", "a:b.json", "com1", "trailing."]


def test_checkpoint_is_closed_before_the_rename_and_a_failed_save_keeps_the_old_one(monkeypatch, tmp_path):
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1}, path)
    real_replace, seen = os.replace, []

    def replace_as_windows_would(src, dst):  # Windows cannot rename a file that is open
        open_now = {Path(f.path).resolve() for f in psutil.Process().open_files()}
        seen.append((Path(src).resolve() in open_now) or (Path(dst).resolve() in open_now))
        real_replace(src, dst)

    monkeypatch.setattr(course_lib.train.os, "replace", replace_as_windows_would)
    save_atomic({"epoch": 2}, path)
    assert seen == [False] and load_checkpoint(path)["epoch"] == 2

    def crash(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(course_lib.train.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def _text_io_without_encoding(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        keywords = {k.arg for k in node.keywords}
        if name in ("read_text", "write_text") and "encoding" not in keywords:
            lines.append(node.lineno)
        if name == "open" and isinstance(node.func, ast.Name) and "encoding" not in keywords:
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                 None)
            if not (isinstance(mode, ast.Constant) and "b" in mode.value):
                lines.append(node.lineno)
    return lines


def test_every_text_file_is_read_and_written_as_utf8():
    """Windows' default encoding is not UTF-8 (cp1252), so every text open names its encoding."""
    found = {}
    for path in Path(course_lib.__file__).parent.rglob("*.py"):
        lines = _text_io_without_encoding(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[path.name] = lines
    assert found == {}
    assert _text_io_without_encoding(ast.parse("open(p)\nPath(p).read_text()\nopen(p, 'rb')")) == [1, 2]


# ------------------------------------------------------------ device selection, mocked hardware
@pytest.fixture
def hardware(monkeypatch):
    """Set what the machine has: hardware(cuda=..., mps=..., mps_problem=...)."""
    probe = machine.device_problem
    probe.cache_clear()
    machine._mps_usable.cache_clear()

    def have(*, cuda=False, mps=False, mps_problem=None):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(machine, "mps_available", lambda: mps)
        monkeypatch.setattr(machine, "device_problem", lambda name: mps_problem if name == "mps" else None)
        machine._mps_usable.cache_clear()

    yield have
    machine._mps_usable.cache_clear()
    probe.cache_clear()


MISSING_OP = "NotImplementedError: The operator 'aten::slow_conv3d_forward' is not currently implemented for MPS"


@pytest.mark.parametrize("cuda, mps, problem, picked", [
    (True, True, None, "cuda"),  # CUDA first
    (False, True, None, "mps"),  # then a working Apple GPU
    (False, True, MISSING_OP, "cpu"),  # an Apple GPU without an op the course needs
    (False, False, None, "cpu"),
])
def test_device_auto_selection(hardware, capsys, cuda, mps, problem, picked):
    hardware(cuda=cuda, mps=mps, mps_problem=problem)
    assert machine.get_device().type == picked
    assert machine.get_device().type == picked  # asked again: the fallback line is printed once
    err = capsys.readouterr().err
    if problem:
        assert err.count("\n") == 1 and "lacks an op" in err and "using the CPU" in err and "aten::" in err
    else:
        assert err == ""


def test_explicit_devices(hardware, capsys):
    hardware(cuda=False, mps=True)
    assert machine.get_device("mps") == torch.device("mps") and machine.get_device("cpu").type == "cpu"
    with pytest.raises(SettingError, match="device='cuda' is not allowed: this machine has no CUDA GPU"):
        machine.get_device("cuda")
    hardware(cuda=False, mps=True, mps_problem=MISSING_OP)
    assert machine.get_device("mps").type == "cpu" and "using the CPU" in capsys.readouterr().err
    hardware(cuda=True, mps=False)
    assert machine.get_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(SettingError, match="device='mps' is not allowed: this machine has no Apple GPU"):
        machine.get_device("mps")
    with pytest.raises(SettingError, match="use cpu, cuda, cuda:N or mps"):
        machine.get_device("gpu")


def test_device_probe_runs_a_real_step_and_reports_a_missing_op(monkeypatch):
    machine.device_problem.cache_clear()
    before = torch.get_rng_state()
    assert machine.device_problem("cpu") is None  # the real probe: a SimCLR step, forward and backward
    assert torch.equal(torch.get_rng_state(), before)  # it leaves the random stream as it was

    def no_conv3d(device):
        raise NotImplementedError("The operator 'aten::slow_conv3d_forward' is not currently implemented for MPS\n"
                                  "details on a second line")

    monkeypatch.setattr(machine, "_training_step", no_conv3d)
    machine.device_problem.cache_clear()
    assert machine.device_problem("cpu") == MISSING_OP
    machine.device_problem.cache_clear()


def test_autocast_rules_per_device():
    assert runtime.AUTOCAST == {"cuda": torch.bfloat16}  # bf16 on CUDA only: fp32 on MPS and the CPU
    for name in ("cpu", "mps"):
        assert isinstance(runtime.autocast(torch.device(name)), contextlib.nullcontext)
    assert isinstance(runtime.autocast(torch.device("cuda"), enabled=False), contextlib.nullcontext)


# ------------------------------------------------------------ the mode that fits the machine
@pytest.mark.parametrize("env, cuda, mps, name, reason", [
    ({"COURSE_MODE": "test"}, True, False, "test", "COURSE_MODE=test is set"),
    ({"COURSE_MODE": "CPU", "CI": "true"}, True, False, "cpu", "COURSE_MODE=cpu is set"),
    ({"COURSE_MODE": "full", "COURSE_QUICK": "1"}, False, False, "full", "COURSE_MODE=full is set"),
    ({"COURSE_QUICK": "1"}, True, False, "cpu", "COURSE_QUICK=1 is set"),
    ({"COURSE_QUICK": "0"}, False, False, "full", "COURSE_QUICK=0 is set"),
    ({"CI": "true"}, True, False, "test", "CI is set"),
    ({"CI": "true", "COURSE_QUICK": "0"}, False, False, "full", "COURSE_QUICK=0 is set"),
    ({}, True, False, "full", "a GPU was found"),
    ({}, False, True, "full", "a GPU was found: Apple GPU"),
    ({}, False, False, "cpu", "no GPU was found"),
])
def test_mode_fits_the_machine(hardware, monkeypatch, env, cuda, mps, name, reason):
    for var in ("COURSE_MODE", "COURSE_QUICK", "CI"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    hardware(cuda=cuda, mps=mps)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Mock GPU")
    mode = machine.course_mode()
    assert mode.name == name and mode.reason.startswith(reason)
    assert machine.quick_mode() is (name != "full")


def test_setup_says_which_mode_why_and_how_to_change_it(hardware, monkeypatch, capsys):
    for var in ("COURSE_MODE", "COURSE_QUICK", "CI"):
        monkeypatch.delenv(var, raising=False)
    hardware(cuda=False, mps=False)
    s = machine.setup(seed=0)
    out = capsys.readouterr().out
    assert s.mode == "cpu" and s.quick and s.runs.name == "cpu"
    assert "mode: CPU, the CPU default" in out and "because no GPU was found" in out and "COURSE_MODE=test or full" in out
    monkeypatch.setenv("COURSE_MODE", "test")
    s = machine.setup(seed=0)
    assert s.runs.name == "test" and "its numbers are not results" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_MODE", "quick")
    with pytest.raises(SettingError, match="COURSE_MODE='quick' is not allowed: use test, cpu, full"):
        machine.setup(seed=0)
    monkeypatch.delenv("COURSE_MODE")
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    with pytest.raises(SettingError, match="COURSE_QUICK='maybe' is not allowed: use 1"):
        machine.setup(seed=0)


def test_commands_run_the_cpu_default_without_a_gpu_and_say_so(hardware, monkeypatch, capsys, tmp_path):
    import course_lib.experiment as experiment

    for var in ("COURSE_MODE", "COURSE_QUICK", "CI"):
        monkeypatch.delenv(var, raising=False)
    hardware(cuda=False, mps=False)
    got = {}

    def fake_pretrain(cfg, data, out, progress):
        got["cfg"] = cfg
        return {"final": None, "epochs_done": 0}

    monkeypatch.setattr(experiment, "pretrain", fake_pretrain)
    assert main(["pretrain", "--method", "vcop", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("course_lib: cpu mode (the CPU default") and "because no GPU was found" in err
    assert "COURSE_MODE=test or full" in err
    assert got["cfg"] == default_config("cpu", method="vcop") == budget("cpu", method="vcop")  # the notebooks' budget
    monkeypatch.setenv("COURSE_MODE", "full")  # forced: no note, the course budget
    assert main(["pretrain", "--method", "vcop", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().err == "" and got["cfg"] == default_config("full", method="vcop") == budget("full", method="vcop")
