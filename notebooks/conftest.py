"""nbval runs these notebooks at the test budget (``COURSE_MODE=test``, a smoke test of the code), also
when pytest is pointed at this folder alone, and the session ends with each notebook's wall time (its cells' run time, kernel start excluded), for the runtime
boxes and the README's course map."""
import os
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("COURSE_MODE", "test")
os.environ.setdefault("MPLBACKEND", "Agg")

_SECONDS: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = Path(report.nodeid.split("::")[0])
    if path.suffix == ".ipynb":
        _SECONDS[path.name] += report.duration


def pytest_terminal_summary(terminalreporter):
    if _SECONDS:
        terminalreporter.section(f"notebook times (cells, {os.environ.get('COURSE_MODE', 'test')} mode)")
        for name, seconds in sorted(_SECONDS.items()):
            terminalreporter.write_line(f"{name:40s} {seconds:7.1f} s")
