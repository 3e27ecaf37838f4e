"""The spawn start method, as macOS and Windows use it, checked on any OS.

Each test runs a script in a fresh Python that sets ``multiprocessing.set_start_method("spawn")``
first, as a learner's script on a Mac would have it, then does one job with worker processes;
the result must equal the same job done here with no workers. Spawned workers import
everything anew, so anything a worker needs that is not importable (a lambda, a class defined
in ``__main__``, state set up only in the parent) fails here as it would on a laptop.
"""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib.course import default_config
from course_lib.data.synth import PRESETS, generate
from course_lib.experiment import evaluate, pretrain
from course_lib.video import write_video
from indexed import indexed_frames

pytestmark = pytest.mark.slow
TINY = replace(PRESETS["quick"], train_per_class=2, test_per_class=1, min_frames=24, max_frames=32)
REPO = Path(__file__).resolve().parents[1]

HARNESS = '''
import json, multiprocessing, multiprocessing.spawn, sys

spawned = []  # one entry per process started by spawn, counted in the parent
_prepare = multiprocessing.spawn.get_preparation_data
multiprocessing.spawn.get_preparation_data = lambda name: spawned.append(name) or _prepare(name)


def job():
{body}


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    result = job()
    print(json.dumps({{"result": result, "spawned": len(spawned), "method": multiprocessing.get_start_method()}}))
'''


def run_spawned(tmp_path: Path, body: str, timeout: int = 300) -> dict:
    script = tmp_path / "spawned_job.py"
    script.write_text(HARNESS.format(body=textwrap.indent(textwrap.dedent(body), "    ")), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["method"] == "spawn"
    return out


def hashes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.mp4"))}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("spawn data"), TINY, workers=1, progress=False)


def test_dataset_generation_under_spawn(tmp_path, tiny_data):
    out = run_spawned(tmp_path, f'''
        from dataclasses import replace
        from course_lib.data.synth import PRESETS, generate
        cfg = replace(PRESETS["quick"], train_per_class=2, test_per_class=1, min_frames=24, max_frames=32)
        return len(generate({str(tmp_path / "spawned")!r}, cfg, workers=2, progress=False))
    ''')
    assert out["result"] == len(tiny_data) and out["spawned"] == 2
    assert hashes(tmp_path / "spawned") == hashes(tiny_data.root)  # the same bytes as one process writes


SMALL = dict(method="simclr", width=0.125, clip_len=4, stride=1, size=28, batch_size=4, epochs=1, steps_per_epoch=3,
             warmup_epochs=0.5, test_clips=2)  # every field that moves the numbers, whatever the test budget is


def test_a_training_epoch_and_evaluation_with_two_spawned_loader_workers(tmp_path, tiny_data):
    run = tmp_path / "spawned run"
    out = run_spawned(tmp_path, f'''
        import torch
        from course_lib.course import default_config
        from course_lib.experiment import evaluate, pretrain
        torch.set_num_threads(1)  # as below: one reduction order on both sides
        cfg = default_config("test", num_workers=2, **{SMALL!r})
        summary = pretrain(cfg, {str(tiny_data.root)!r}, {str(run)!r}, progress=False)
        return {{"train": summary["final"],
                 "eval": evaluate("retrieval", cfg, {str(tiny_data.root)!r}, checkpoint={str(run)!r}, progress=False)}}
    ''')
    assert out["spawned"] >= 2 * 3  # the training loader, then the train and test feature loaders
    cfg = default_config("test", num_workers=0, **SMALL)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # whatever an earlier test left: AdamW's first steps amplify a changed reduction order
    try:
        here = pretrain(cfg, str(tiny_data.root), tmp_path / "here", progress=False)["final"]
    finally:
        torch.set_num_threads(threads)
    assert out["result"]["train"]["loss"] == pytest.approx(here["loss"], rel=1e-6)
    a = torch.load(run / "checkpoint.pt", weights_only=True)["method"]
    b = torch.load(tmp_path / "here" / "checkpoint.pt", weights_only=True)["method"]
    torch.testing.assert_close(a, b)
    ours = evaluate("retrieval", cfg, str(tiny_data.root), checkpoint=str(tmp_path / "here"), progress=False)
    spawned = out["result"]["eval"]
    assert {k: v for k, v in spawned.items() if k.startswith("R@")} == {k: v for k, v in ours.items()
                                                                         if k.startswith("R@")}


def test_prepare_with_two_spawned_workers(tmp_path):
    src = tmp_path / "source vidéos"
    for i, (label, n) in enumerate([("jump é", 20), ("jump é", 24), ("run", 16), ("run", 30)]):
        write_video(src / label / f"clip {i}.mp4", indexed_frames(n, 96, 128), fps=25)
    (src / "run" / "broken.mp4").write_bytes(b"not a video" * 50)
    out = run_spawned(tmp_path, f'''
        from course_lib.data.prepare import prepare
        return prepare("folder", {str(src)!r}, {str(tmp_path / "spawned")!r}, workers=2, progress=False)
    ''')
    assert out["spawned"] == 2
    from course_lib.data.prepare import prepare
    here = prepare("folder", src, tmp_path / "here", workers=1, progress=False)
    keys = ("videos", "encoded", "failed", "missing", "classes", "splits")
    assert {k: out["result"][k] for k in keys} == {k: here[k] for k in keys} and here["failed"] == 1
    assert hashes(tmp_path / "spawned") == hashes(tmp_path / "here") and len(hashes(tmp_path / "here")) == 4
    manifests = [(tmp_path / d / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[1:] for d in
                 ("spawned", "here")]
    assert manifests[0] == manifests[1]


def test_notebook_01_under_spawn(tmp_path):
    """Notebook 01 (DataLoaders with 1 and 2 workers) in a kernel whose start method is spawn."""
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "01_video_as_data.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        "import multiprocessing, multiprocessing.spawn\n"
        "multiprocessing.set_start_method('spawn', force=True)\n"
        "_spawned = []\n"
        "_prepare = multiprocessing.spawn.get_preparation_data\n"
        "multiprocessing.spawn.get_preparation_data = lambda name: _spawned.append(name) or _prepare(name)"))
    nb.cells.append(nbformat.v4.new_code_cell(
        "assert multiprocessing.get_start_method() == 'spawn'\n"
        "assert len(_spawned) >= 3, _spawned  # the loaders' workers were spawned"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}},
                   ).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
