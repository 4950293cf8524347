"""The sliders work in a real browser: JupyterLab from .venv, Debian's chromium, Playwright.

The test copies the book out as a student does, with ``kdbook notebooks DIR`` into a
temporary folder (so the notebook's default ``run_dir = "runs/lab"`` lands there), starts
JupyterLab on it, opens ``04_loss.ipynb``, runs every cell from the Run menu, moves the
temperature explorer's T slider with the keyboard and checks that the plot was redrawn.
``KDBOOK_BROWSER_PYTHON=/path/to/venv/bin/python`` runs ``kdbook notebooks`` and JupyterLab
from another environment (a venv with the wheel installed, say) instead of this one.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs it), never from
``playwright install``. Without chromium the test is skipped on a workstation and fails in
CI (``CI=true``). Set ``KDBOOK_BROWSER_SHOTS=DIR`` to keep the screenshots it takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = "04_loss.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "kdbook-browser-test"
SLIDER_LABEL = "T"  # the temperature explorer's slider
RUN_ALL_SECONDS = 150  # the notebook trains its teacher when opened alone: ~10 s on a free CPU


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _require(what: str, available: bool, how: str) -> None:
    if available:
        return
    message = f"{what} is not installed ({how})"
    if _in_ci():
        pytest.fail(f"{message}: CI must run the browser test")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    _require(
        "chromium",
        Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK),
        "apt-get install -y chromium; .ci/run does it",
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require("playwright", False, 'pip install -e ".[dev]"')
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # localhost only
        return response.read()


def _python() -> str:
    """The interpreter whose kdbook and JupyterLab the test uses (KDBOOK_BROWSER_PYTHON)."""
    return os.environ.get("KDBOOK_BROWSER_PYTHON") or sys.executable


def _env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    if os.environ.get("KDBOOK_BROWSER_PYTHON"):
        env.pop("PYTHONPATH", None)  # that environment's kdbook, not a source tree's
    env.update(
        JUPYTER_CONFIG_DIR=str(scratch / "config"),
        JUPYTER_DATA_DIR=str(scratch / "data"),  # no user-level kernelspec shadows .venv's
        JUPYTER_RUNTIME_DIR=str(scratch / "runtime"),
        JUPYTER_PREFER_ENV_PATH="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def jupyterlab(root: Path, scratch: Path) -> Iterator[str]:
    """Start JupyterLab from the test's environment (:func:`_python`) on ``root``; yield its
    base URL.

    A fresh config folder and workspaces folder per run (a reused workspace left cells
    unexecuted in TOOLING.md's trials); stopped, kernels included, on the way out.
    """
    port = _free_port()
    env = _env(scratch)
    cmd = [
        _python(),
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = (scratch / "jupyterlab.log").open("wb")
    server = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}: {_tail(scratch)}")
            with contextlib.suppress(OSError):
                json.loads(_get(f"{base}/api/status?token={TOKEN}"))
                break
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer /api/status in 90 s: {_tail(scratch)}")
            time.sleep(0.5)
        yield base
    finally:
        _stop(server, base)
        log.close()


def _tail(scratch: Path, lines: int = 15) -> str:
    path = scratch / "jupyterlab.log"
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(server: subprocess.Popen, base: str) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure it is gone."""
    if server.poll() is None:
        with contextlib.suppress(OSError):
            request = urllib.request.Request(f"{base}/api/shutdown?token={TOKEN}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()  # localhost only
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=15)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the server's process group: its kernels too
        if server.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)


def _output_image(output) -> str:
    """What the Output widget draws: the src of its image (a data: URL of the PNG)."""
    image = output.locator("img").first
    image.wait_for(state="visible", timeout=30_000)
    return image.get_attribute("src") or ""


def test_moving_the_temperature_slider_redraws_the_plot(chromium: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    root = tmp_path / "book"
    copied = subprocess.run(  # as a student gets the book: kdbook notebooks DIR
        [_python(), "-m", "kdbook", "notebooks", str(root)],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert (root / NOTEBOOK).is_file()
    shots = Path(os.environ.get("KDBOOK_BROWSER_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    with jupyterlab(root, tmp_path) as base, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        page = browser.new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={TOKEN}")
            # the kernel's status in the status bar; the toolbar's indicator says idle too early
            kernel_idle = page.get_by_text(re.compile(r"\| Idle$")).first
            kernel_idle.wait_for(timeout=90_000)
            _run_all_cells(page)

            label = page.locator(".widget-label", has_text=re.compile(rf"^{SLIDER_LABEL}$"))
            slider = page.locator(".widget-slider").filter(has=label).first
            slider.wait_for(state="attached", timeout=RUN_ALL_SECONDS * 1000)
            slider.scroll_into_view_if_needed()
            explorer = slider.locator(
                "xpath=ancestor::div[contains(concat(' ', @class, ' '), ' widget-vbox ')][1]"
            )
            output = explorer.locator(".widget-output").first
            before = _output_image(output)
            _wait_until_idle(page, RUN_ALL_SECONDS)
            ran_all = time.monotonic() - started
            prompts = page.evaluate(CODE_PROMPTS_JS)
            unrun = [i for i, text in enumerate(prompts) if not re.search(r"[0-9]", text)]
            assert not unrun, f"code cells {unrun} did not run (an error stopped Run All?)"

            readout = slider.locator(".widget-readout")
            value_before = readout.inner_text()
            output.scroll_into_view_if_needed()
            explorer.screenshot(path=str(shots / "before.png"))

            moved = time.monotonic()
            slider.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            expect(readout).not_to_have_text(value_before, timeout=10_000)
            expect(output.locator("img").first).not_to_have_attribute("src", before, timeout=30_000)
            redraw = time.monotonic() - moved
            explorer.screenshot(path=str(shots / "after.png"))

            after = _output_image(output)
            assert after != before, "moving the T slider did not redraw the plot"
            assert readout.inner_text() != value_before
            errors = output.locator("[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0, (
                f"the explorer printed an error: {errors.first.inner_text()}"
            )
            print(
                f"T {value_before} -> {readout.inner_text()}: redrawn in {redraw:.1f} s "
                f"(notebook ran in {ran_all:.0f} s); screenshots in {shots}"
            )
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert (root / "runs" / "lab").is_dir(), "the notebook's run_dir is beside the notebook"


PROMPTS_JS = "[...document.querySelectorAll('.jp-InputArea-prompt')].map(p => p.textContent)"
CODE_PROMPTS_JS = PROMPTS_JS.replace(".jp-InputArea-prompt", ".jp-CodeCell .jp-InputArea-prompt")


def _run_all_cells(page) -> None:
    """Run > Run All Cells; once more if no cell started (a click before the kernel was
    ready is dropped)."""
    for _attempt in range(2):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(re.search(r"[*0-9]", p) for p in page.evaluate(PROMPTS_JS)):
                return
            time.sleep(0.5)
    pytest.fail("Run All Cells did not start any cell")


def _wait_until_idle(page, seconds: float) -> None:
    """Wait until no cell is queued or running ([*]) and the kernel is idle."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')];
            const busy = prompts.some(p => p.textContent.includes('*'));
            const idle = [...document.querySelectorAll('.jp-StatusBar-Widget *')].some(
                e => e.children.length === 0 && e.textContent.trim().endsWith('| Idle'));
            return !busy && idle;
        }""",
        timeout=seconds * 1000,
        polling=500,
    )


def test_the_html_book_opens_offline_with_its_saved_widgets(chromium: str, tmp_path: Path) -> None:
    """run_book's HTML book, opened from disk with the network off: the saved slider and
    its plot are drawn by the vendored widget renderer, the index shows the summary's
    figures, and no page asks for anything but files."""
    from conftest import write_notebook
    from playwright.sync_api import expect, sync_playwright
    from test_html import FIGURE_CELL, SLIDER_CELL

    from kdbook.machinery.runner import run_book

    notebooks = tmp_path / "notebooks"
    params = 'run_dir = "."  # run folder\ntemperature = 2.0  # T'
    write_notebook(notebooks / "01_first.ipynb", params, "from pathlib import Path", FIGURE_CELL)
    write_notebook(notebooks / "02_slider.ipynb", params, SLIDER_CELL)
    html = run_book(out=tmp_path / "run", notebook_dir=notebooks, timeout=120) / "html"
    shots = Path(os.environ.get("KDBOOK_BROWSER_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            headless=True,
            offline=True,
            viewport={"width": 1000, "height": 800},
        )
        requests: list[str] = []
        problems: list[str] = []
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto((html / "02_slider.html").as_uri())
            slider = page.locator(".widget-slider")
            expect(slider).to_be_visible()
            expect(slider.locator(".widget-readout")).to_have_text("2.00")
            plot = page.locator(".widget-output img").first
            expect(plot).to_be_visible()
            assert page.evaluate("img => img.naturalWidth", plot.element_handle()) > 0
            page.screenshot(path=str(shots / "html-chapter.png"))

            page.locator("nav.kdbook-nav.top a", has_text="Contents").click()
            expect(page).to_have_title("kdbook: run")
            figure = page.locator('img[src="figures/line.png"]')
            expect(figure).to_be_visible()
            assert page.evaluate("img => img.naturalWidth", figure.element_handle()) > 0
            page.screenshot(path=str(shots / "html-index.png"), full_page=True)
        finally:
            browser.close()
    remote = [url for url in requests if not url.startswith(("file:", "data:"))]
    assert not remote, f"the HTML book asked the network for {remote}"
    assert not problems, f"JavaScript errors: {problems}"
