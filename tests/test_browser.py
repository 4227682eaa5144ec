"""A real browser renders the explorer: JupyterLab on localhost, notebook 05 run in headless Chromium,
a latent picked and the steering panel driven once.

Needs Debian's `chromium` (apt-get install chromium) and the `playwright` Python package (in the dev
extra); Playwright drives the system Chromium through `executable_path`, no browser download. Skipped
when Chromium is missing, except under CI (CI=true), where .ci/run installs it and a skip would hide
a broken check. The screenshot goes to $SAELAB_SCREENSHOT_DIR (default: the test's tmp folder).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "05_explore_latents.ipynb"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]


def _need(ok: bool, why: str):
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter(tmp_path):
    """JupyterLab serving a copy of notebook 05 (so the run never writes into the repository)."""
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    port, token = _free_port(), "saelab-browser-test"
    env = {**os.environ, "SAELAB_FAST": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    tail = (tmp_path / "jupyter.log").read_text()[-2000:]
                    raise RuntimeError(f"jupyter lab exited: {tail}") from None
                time.sleep(1)
        else:
            raise RuntimeError("jupyter lab did not start within 120 s")
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_explorer_renders_in_chromium(jupyter, tmp_path):
    chromium = shutil.which("chromium")
    _need(chromium is not None, "Debian's chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is missing: pip install -e '.[dev]'")
    url, token = jupyter
    shots = Path(os.environ.get("SAELAB_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "chrome"), executable_path=chromium,
                                                        headless=True, args=CHROMIUM_FLAGS,
                                                        viewport={"width": 1400, "height": 1800})
        try:
            page = browser.new_page()
            page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            try:  # JupyterLab may ask which kernel to start: accept its proposal (the venv's python3)
                page.locator(".jp-Dialog .jp-mod-accept").click(timeout=15_000)
            except Exception:  # noqa: BLE001 - no dialog: the kernel started by itself
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            # the explorer's latent picker: an IntText labelled "latent"
            picker = page.locator(".widget-inline-hbox:has(label:text-is('latent')) input").first
            try:
                picker.wait_for(timeout=int(os.environ.get("SAELAB_BROWSER_TIMEOUT_MS", 600_000)))
            except Exception:
                page.screenshot(path=str(shots / "explorer-failure.png"), full_page=True)
                raise
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=300_000)
            assert page.get_by_text("Error displaying widget").count() == 0
            header = page.locator(".widget-html-content h3", has_text="Latent").first
            before = header.inner_text()
            picker.fill("3")
            picker.press("Enter")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.widget-html-content h3')]"
                ".some(e => e.textContent.startsWith('Latent 3 '))", timeout=60_000)
            assert "Latent 3" in header.inner_text() and header.inner_text() != before or before.startswith("Latent 3")
            assert page.locator(".js-plotly-plot").count() >= 2  # the FigureWidgets rendered
            # the steering panel: generate from its prompt with latent 3 added, next to the unedited text
            prompt = page.locator(".widget-inline-hbox:has(label:text-is('prompt')) input").first
            prompt.fill("<i>Paris</i> is")
            page.locator("button", has_text="Generate").first.click()
            panel = page.locator(".saelab-steering").first
            panel.wait_for(timeout=120_000)
            text = panel.inner_text()
            assert "unedited" in text and "latent 3 +" in text and "<i>Paris</i> is" in text  # shown, not parsed
            assert page.locator(".saelab-steering i i").count() == 0
            assert page.get_by_text("Error displaying widget").count() == 0
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not tracebacks, tracebacks[:1]
            page.screenshot(path=str(shots / "explorer.png"), full_page=False)
        finally:
            browser.close()
    assert (shots / "explorer.png").stat().st_size > 10_000


def _handout(tmp_path) -> Path:
    """An executed notebook made of notebook 06's markdown (the series' hardest formulas) and a plotly figure,
    written as the series runner writes its handouts."""
    import nbformat
    from nbclient import NotebookClient

    from saelab.teach.handout import self_contained_html

    source = nbformat.read(ROOT / "notebooks" / "06_scaling_laws.ipynb", as_version=4)
    cells = [c for c in source.cells if c.cell_type == "markdown" and "$" in c.source][:3]
    assert cells, "notebook 06 has no formulas any more: pick another notebook for this test"
    code = nbformat.v4.new_code_cell("import plotly.graph_objects as go\n"
                                     "go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name='curve')).show()")
    nb = nbformat.v4.new_notebook(cells=[*cells, code])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    page = tmp_path / "handout.html"
    page.write_text(self_contained_html(nb), encoding="utf-8")
    return page


def test_an_executed_notebooks_handout_renders_offline(tmp_path):
    chromium = shutil.which("chromium")
    _need(chromium is not None, "Debian's chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is missing: pip install -e '.[dev]'")
    page_path = _handout(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            asked = []

            def offline(route):  # no network: every request off the file itself is refused, and recorded
                asked.append(route.request.url)
                route.abort()

            page.route("http*://**/*", offline)
            page.goto(page_path.as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)  # plotly.js drew the figure
            assert page.locator(".js-plotly-plot .scatterlayer .trace").count() == 1
            assert page.locator("math").count() >= 3  # the formulas, as MathML
            box = page.locator("math").first.bounding_box()
            assert box and box["width"] > 5 and box["height"] > 5  # laid out, not an empty element
            prose = " ".join(page.locator(".jp-MarkdownOutput, .jp-RenderedMarkdown").all_inner_texts())
            prose_no_code = prose
            for code in page.locator(".jp-RenderedMarkdown code").all_inner_texts():
                prose_no_code = prose_no_code.replace(code, "")
            assert prose.strip() and "$" not in prose_no_code, prose_no_code[:300]  # no raw TeX left
            assert not asked, asked[:3]
        finally:
            browser.close()


def test_a_dashboard_latent_page_renders_offline(tmp_path, tiny_lm):
    """`saelab dashboard`'s page of one latent, opened from the file system with every network request refused:
    plotly.js (the folder's own copy) draws both figures, and tokens carrying markup are shown as text."""
    chromium = shutil.which("chromium")
    _need(chromium is not None, "Debian's chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is missing: pip install -e '.[dev]'")
    from tests.test_dashboard_export import make_dashboard

    out, _, _ = make_dashboard(tiny_lm, tmp_path / "dash")
    page_path = sorted((out / "latents").glob("*.html"))[0]
    shots = Path(os.environ.get("SAELAB_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            asked = []

            def offline(route):
                asked.append(route.request.url)
                route.abort()

            page.route("http*://**/*", offline)
            page.goto(page_path.as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
            assert page.locator(".js-plotly-plot").count() == 2  # activation histogram and density
            assert page.locator("h3", has_text=f"Latent {page_path.stem}").count() == 1
            tokens = " ".join(page.locator(".sl-tok").all_inner_texts())
            assert "<i>" in tokens and page.locator(".sl-tok i").count() == 0  # shown, never parsed
            assert not asked, asked[:3]
            page.screenshot(path=str(shots / "dashboard.png"), full_page=False)
        finally:
            browser.close()
    assert (shots / "dashboard.png").stat().st_size > 10_000
