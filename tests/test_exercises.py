"""The notebooks' blanks: each is a blank, a check and a collapsed solution; the solution passes its check, the
blank is "not written yet", and every check says "not yet" to a wrong answer."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.exercise import EXERCISES, check

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECK = re.compile(r'^check\("(\w+)", (\w+)\)$')
IMPORT = re.compile(r"^(import \S+( as \w+)?|from \S+ import [^(]+)$")  # one-line imports of the cells before a blank


def exercises():
    """(notebook, blank source, check cell's exercise and function, solution cell) of every blank."""
    found = []
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if "check" in cell["metadata"].get("tags", []):
                name, fn = CHECK.match("".join(cell["source"]).strip()).groups()
                imports = "\n".join(line for c in cells[:i] if c["cell_type"] == "code"
                                     for line in "".join(c["source"]).splitlines() if IMPORT.match(line))
                found.append(pytest.param(path.name, "".join(cells[i - 1]["source"]), cells[i - 1]["metadata"], name,
                                          fn, cells[i + 1], imports, id=f"{path.stem[:2]}-{name}"))
    return found


def run(source: str, imports: str) -> dict:
    """Execute a cell's source after the imports of the notebook's cells before it."""
    space = {}
    exec(compile(imports, "<imports>", "exec"), space)
    space["check"] = lambda *a, **k: check(*a, quiet=True, **k)
    exec(compile(source, "<cell>", "exec"), space)
    return space


def wrong(fn):
    """Answers that are not right: the solution's output nudged, the wrong type, and an error."""
    def nudged(*args):
        out = fn(*args)
        if torch.is_tensor(out):
            return out * 1.1 + 0.01
        return np.roll(out, 1, axis=0) if out.shape[0] > 1 and not (out == out[:1]).all() else out + 1
    return [nudged, lambda *args: None, lambda *args: 1 / 0]


@pytest.mark.parametrize("notebook, blank, blank_meta, name, fn, solution, imports", exercises())
def test_a_blank_its_check_and_its_collapsed_solution(notebook, blank, blank_meta, name, fn, solution, imports):
    assert "blank" in blank_meta.get("tags", []) and 'raise NotImplementedError("write this")' in blank
    assert f"def {fn}(" in blank and '"""' in blank  # a signature and a docstring to write to
    assert "solution" in solution["metadata"]["tags"] and solution["metadata"]["jupyter"]["source_hidden"] is True
    assert check(name, run(blank, imports)[fn], quiet=True).ok is None  # "not written yet", and the notebook runs on
    answer = run("".join(solution["source"]), imports)[fn]
    assert check(name, answer, quiet=True).ok is True
    for bad in wrong(answer):
        verdict = check(name, bad, quiet=True)
        assert verdict.ok is False and verdict.message.startswith(f"{name}: "), verdict


def test_every_exercise_has_its_blank_in_a_notebook():
    used = {p.values[3] for p in exercises()}
    assert used == set(EXERCISES)


def test_a_check_never_shows_the_expected_values():
    """What differs is said with shapes and sizes of differences, not the reference's numbers."""
    verdict = check("info_nce", lambda q, k, t: torch.tensor(123.456), quiet=True)
    want = EXERCISES["info_nce"].reference(*EXERCISES["info_nce"].cases()[0])
    assert f"{float(want):.3g}" not in verdict.message and f"{float(want):.4f}" not in verdict.message


def test_every_notebook_from_01_to_10_has_a_blank():
    have = {p.values[0][:2] for p in exercises()}
    assert have >= {f"{n:02d}" for n in range(1, 11)}, sorted(have)
