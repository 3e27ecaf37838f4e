"""The worked solutions (notebooks/solutions/): one for every course notebook with exercises, one solution per
exercise, committed without outputs, with unique cell ids. nbval runs them; this only reads them."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLVED = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))  # every course notebook


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def exercises(stem: str) -> list[str]:
    """The numbers of the items of the course notebook's "## Exercises" list."""
    text = next("".join(c["source"]) for c in cells(ROOT / "notebooks" / f"{stem}.ipynb")
                if c["cell_type"] == "markdown" and "## Exercises" in "".join(c["source"]))
    listed = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^(\d+)\. ", listed, flags=re.M)


@pytest.mark.parametrize("stem", SOLVED)
def test_every_exercise_has_a_worked_solution(stem):
    path = ROOT / "notebooks" / "solutions" / f"{stem}.ipynb"
    assert "".join(cells(path)[0]["source"]).startswith(f"# Solutions · {stem[:2]} ")
    solved = [m for c in cells(path) if c["cell_type"] == "markdown"
              for m in re.findall(r"^## Exercise (\d+)$", "".join(c["source"]), flags=re.M)]
    assert solved == exercises(stem)


@pytest.mark.parametrize("stem", SOLVED)
def test_solutions_are_committed_without_outputs(stem):
    found = cells(ROOT / "notebooks" / "solutions" / f"{stem}.ipynb")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in found if c["cell_type"] == "code")
    ids = [c["id"] for c in found]
    assert len(set(ids)) == len(ids)
