"""The widgets in a real browser: notebook 06 in JupyterLab under headless Chromium.

Kernel-side tests (test_widgets.py) cannot see the front end: a mismatch between ipywidgets and
jupyterlab_widgets leaves "Loading widget..." or "Error displaying widget" in the page while the
kernel is happy. Here the page runs the cells, and a slider, a toggle and a drop-down moved in
the page must change the picture the page shows. Deselect with ``-m "not browser"``.
"""
import json
import os

import pytest

from lab_browser import ROOT, chromium_path, jupyter_lab  # tests/lab_browser.py

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NOTEBOOK = ROOT / "notebooks" / "06_cvrl.ipynb"


def _cell_of(code: str) -> int:
    """The index (among all cells) of the notebook's code cell that starts with ``code``."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    return next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and "".join(c["source"]).startswith(code))


AUGMENT_CELL = _cell_of("clip = ClipDataset(")  # the augmentation explorer's cell
SAMPLER_CELL = _cell_of("SamplerExplorer(")  # the interval sampler's


@pytest.fixture(scope="module")
def page():
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the browser test: .ci/run installs Debian's chromium package as root")
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    pytest.importorskip("playwright", reason="Playwright's Python package is not installed (pip install -e '.[dev]')")
    from lab_browser import browser_page, open_notebook

    before = NOTEBOOK.read_bytes()
    with jupyter_lab([NOTEBOOK], env={"COURSE_MODE": "test", "MPLBACKEND": "Agg"}) as (base, token), \
            browser_page() as page:
        open_notebook(page, base, token, NOTEBOOK.name)
        yield page
    assert NOTEBOOK.read_bytes() == before  # the page ran a copy: the course's notebook keeps no outputs


def shown(page, index):
    """The picture the widget of cell ``index`` shows now: a digest of the image bytes the page holds
    (the explorer's picture is an animated GIF, so a screenshot would change by itself), once the
    browser has decoded and laid it out."""
    from playwright.sync_api import expect

    from lab_browser import cell

    img = cell(page, index).locator(".jupyter-widgets img")
    expect(img).to_be_visible()
    return img.evaluate("""async (img) => {
        while (!(img.complete && img.naturalWidth > 0)) { await new Promise((r) => setTimeout(r, 50)); }
        const bytes = await (await fetch(img.src)).arrayBuffer();
        const digest = await crypto.subtle.digest('SHA-256', bytes);
        return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    }""")


def changes(page, index, act, timeout=30):
    """Do ``act`` and wait until the widget's picture differs from before; the new picture."""
    before = shown(page, index)
    act()
    deadline = 0
    while deadline < timeout * 4:
        page.wait_for_timeout(250)
        now = shown(page, index)
        if now != before:
            return now
        deadline += 1
    raise AssertionError(f"cell {index}: the picture did not change within {timeout} s")


def to_the_end(slider):
    """Move an ipywidgets slider to its largest value from the keyboard, as a learner can."""
    handle = slider.locator(".noUi-handle")
    handle.focus()
    handle.press("End")


def rendered_without_error(page, index, outputs):
    from lab_browser import cell

    assert not [o for o in outputs if o["output_type"] == "error"], outputs
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, f"cell {index} displayed no widget: {outputs}"
    area = cell(page, index).locator(".jp-OutputArea")
    try:
        area.locator(".jupyter-widgets").first.wait_for(state="visible", timeout=60_000)
    except Exception:
        raise AssertionError(f"cell {index}: the page drew no widget (is jupyterlab_widgets installed and "
                             f"compatible with ipywidgets?); it shows: {area.inner_text()[:300]!r}") from None
    text = area.inner_text()
    assert "Error displaying widget" not in text and "Loading widget" not in text, text


def test_the_augmentation_explorer_renders_and_reacts(page):
    from lab_browser import cell, run_cell

    outputs = run_cell(page, AUGMENT_CELL, above=True)  # the set-up cells, then the explorer
    rendered_without_error(page, AUGMENT_CELL, outputs)
    area = cell(page, AUGMENT_CELL)
    first = shown(page, AUGMENT_CELL)
    slider = area.locator(".widget-slider", has_text="min crop area")  # to 1: the views show more of the frame
    after_slider = changes(page, AUGMENT_CELL, lambda: to_the_end(slider))
    after_toggle = changes(page, AUGMENT_CELL, lambda: area.get_by_role("button", name="per frame").click())
    assert len({first, after_slider, after_toggle}) == 3


def test_the_sampler_explorer_renders_and_reacts(page):
    from lab_browser import cell, run_cell

    outputs = run_cell(page, SAMPLER_CELL)
    rendered_without_error(page, SAMPLER_CELL, outputs)
    area = cell(page, SAMPLER_CELL)
    first = shown(page, SAMPLER_CELL)
    after_slider = changes(page, SAMPLER_CELL, lambda: to_the_end(area.locator(".widget-slider", has_text="power")))
    after_menu = changes(page, SAMPLER_CELL, lambda: area.locator("select").select_option("increasing"))
    assert len({first, after_slider, after_menu}) == 3
