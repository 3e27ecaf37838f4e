"""What a learner reads: scores quoted in prose match the committed result files, teaching cells hold no
lab notes, and no folder of a named run is spelled out anywhere but in course_lib/course.py."""
import json
import re
from pathlib import Path

import pytest

from course_lib import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# a quoted score is a link to its result file, titled with the score's name: [73.3](results/full/iic.json "linear")
QUOTE = re.compile(r'\[([-+]?\d+(?:\.\d+)?)\]\((?:\.\./)*(?:notebooks/)?results/(\w+)/([\w.-]+)\.json "([^"]+)"\)')
HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def markdown_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "markdown"]


def prose() -> dict[str, str]:
    """Every text a learner reads: the notebooks' markdown, the README and the docs."""
    texts = {f"{p.name} cell {i}": s for p in NOTEBOOKS for i, s in enumerate(markdown_cells(p))}
    for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if p.exists():
            texts[str(p.relative_to(ROOT))] = p.read_text(encoding="utf-8")
    return texts


def wrong_quotes(text: str) -> list[str]:
    """The quoted scores of ``text`` that differ from their result file (at the decimals quoted), or have none."""
    bad = []
    for shown, mode, name, key in QUOTE.findall(text):
        value = course.score(name, key, mode) if name in course.RUNS else None
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        if value is None or round(value, decimals) != float(shown):
            bad.append(f"[{shown}] {mode}/{name} {key!r}: the file holds {value}")
    return bad


def test_every_quoted_score_matches_its_result_file():
    bad = {where: w for where, text in prose().items() if (w := wrong_quotes(text))}
    assert bad == {}


def test_the_quote_check_catches_a_wrong_number(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "results_dir", lambda: tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "iic.json").write_text(json.dumps({"scores": {"linear": 73.333}}))
    assert wrong_quotes('IIC reads [73.3](results/full/iic.json "linear").') == []
    assert wrong_quotes('IIC reads [66.7](results/full/iic.json "linear").') != []  # a retyped old number
    assert wrong_quotes('[73.3](results/full/iic.json "knn")') != []  # a score the file lacks
    assert wrong_quotes('[12.5](results/full/moco.json "linear")') != []  # a run without a file


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_teaching_cells_hold_no_commit_hash_and_stay_short(path):
    for i, text in enumerate(markdown_cells(path)):
        assert len(text) <= 2500, f"{path.name} cell {i}: {len(text)} characters"
        assert not HASH.search(text), f"{path.name} cell {i}: {HASH.search(text).group()}"


def test_no_folder_of_a_named_run_is_written_outside_the_owner_module():
    folders = {s.folder: s.name for s in course.RUNS.values() if s.folder}
    tracked = [p for ext in ("py", "ipynb", "md", "yaml", "sh") for p in ROOT.rglob(f"*.{ext}")
               if ".git" not in p.parts and "data" not in p.parts[len(ROOT.parts):][:1]
               and p != ROOT / "course_lib" / "course.py" and p != Path(__file__)]
    found = {}
    for p in tracked:
        text = p.read_text(encoding="utf-8", errors="replace")
        for folder, name in folders.items():
            if re.search(rf"(?<![\w/]){re.escape(folder)}(?![\w-])", text):
                found.setdefault(str(p.relative_to(ROOT)), []).append(f"{folder} (run {name})")
    assert found == {}


def test_the_readme_is_a_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150


def test_the_measurements_doc_shows_what_the_result_files_hold(tmp_path):
    from course_lib.results import REPORT_BEGIN, REPORT_END, markers, report, write_report
    text = (ROOT / "docs" / "measurements.md").read_text(encoding="utf-8")
    assert REPORT_BEGIN + text.split(REPORT_BEGIN, 1)[1].split(REPORT_END, 1)[0] + REPORT_END == report("full"), \
        "docs/measurements.md is stale: python -m course_lib results --mode full --doc docs/measurements.md"
    begin, end = markers("cpu")  # the CPU default's committed results, in a block of their own
    assert begin + text.split(begin, 1)[1].split(end, 1)[0] + end == report("cpu"), \
        "docs/measurements.md is stale: python -m course_lib results --mode cpu --doc docs/measurements.md"
    doc = tmp_path / "m.md"
    doc.write_text("# M\n\nbefore\n\n" + REPORT_BEGIN + "\nold\n" + REPORT_END + "\n\nafter\n")
    write_report(doc)
    assert doc.read_text() == "# M\n\nbefore\n\n" + report("full") + "\n\nafter\n"
