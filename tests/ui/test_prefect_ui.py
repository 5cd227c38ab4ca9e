"""A person starts a run from the Prefect UI: a real server, a process worker, the deployments of
prefect.yaml, and Chromium (Debian's /usr/bin/chromium, driven by Playwright) filling the
`self-refine` custom-run form with the tiny preset and 2 iterations. The flow run must complete in
the UI, the store must hold exactly that run with 2 iterations, and the plots linked from the last
iteration must render. Screenshots go to the test's directory (`make test-ui`: out/test-ui/).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import RunStatus

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 1200  # a tiny 2-iteration run takes 1-3 min; the machine may be loaded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    # Workers ignore the first SIGTERM for a long while: SIGINT, then SIGKILL, by PID.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _prefect(env: dict, *args: str) -> str:
    proc = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the Prefect server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the Prefect server did not become healthy:\n{log.read_text()[-3000:]}")


@pytest.fixture
def prefect_stack(tmp_path, selfrefine_home, model_cache):
    """A Prefect server, the deployments of prefect.yaml and a process worker on the `local` pool."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"{url}/api",
           "PREFECT_UI_API_URL": f"{url}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_API_LOG_RETRYABLE_ERRORS": "true", "SELFREFINE_PROJECT_DIR": str(REPO),
           "SELFREFINE_HOME": str(selfrefine_home), "SELFREFINE_MODEL_CACHE": str(model_cache),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("SELFREFINE_FAULT", None)
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "worker")}
    procs: list[subprocess.Popen] = []
    try:
        with open(logs["server"], "w") as out:
            procs.append(subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                          cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        _wait_healthy(url, procs[0], logs["server"])
        _prefect(env, "work-pool", "create", "local", "--type", "process", "--overwrite")
        _prefect(env, "--no-prompt", "deploy", "--name", "self-refine")
        with open(logs["worker"], "w") as out:
            procs.append(subprocess.Popen([PREFECT, "worker", "start", "--pool", "local"], cwd=REPO, env=env,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        yield url, logs
    finally:
        for proc in reversed(procs):  # the worker before the server
            _stop(proc)


def _state(page) -> str:
    """The state shown in the flow run page's header badge (V2 UI markup; `.state-badge` in V1)."""
    badge = page.locator("span[class*='bg-state-'], .state-badge").first
    return badge.inner_text().strip() if badge.count() else ""


def test_start_a_two_iteration_tiny_run_from_the_ui(prefect_stack, tmp_path, selfrefine_home):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test-ui` installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="`make test-ui` installs playwright")
    url, logs = prefect_stack
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _start_and_check(page, url, logs, shots)
        except BaseException:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    print(f"screenshots: {shots}")


def _start_and_check(page, url: str, logs: dict, shots: Path) -> None:
    from playwright.sync_api import expect

    # As a person: the UI's start page → Deployments → self-refine → Run → Custom run.
    page.goto(url, wait_until="networkidle")
    page.get_by_role("link", name="Deployments").first.click()
    page.locator("a[href*='/deployments/deployment/']", has_text="self-refine").first.click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    page.wait_for_url("**/run?**")
    page.wait_for_load_state("networkidle")
    # The form shows the preset, the iterations and the knobs with their descriptions and defaults.
    for text in ("The shipped preset the run starts from", "Number of self-refine iterations",
                 "The main settings, set on top of the preset", "Policy Method (Optional)",
                 "Optimizer steps of judge training"):
        expect(page.get_by_text(text).first).to_be_visible()
    preset = page.get_by_label("preset (Optional)", exact=True)
    iterations = page.get_by_label("n_iterations (Optional)", exact=True)
    expect(preset).to_have_value("cpu")  # the deployment's defaults
    expect(iterations).to_have_value("2")
    preset.fill("tiny")
    iterations.fill("2")
    page.screenshot(path=str(shots / "1-custom-run-form.png"), full_page=True)
    # Prefect's SQLite server can answer 503 ("retry") when busy; the UI then shows an error and
    # keeps the form, and a person submits again. A 503 created nothing (the store check below
    # would see a second run).
    for attempt in range(3):
        with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as created:
            page.get_by_role("button", name="Submit").click()
        response = created.value
        if response.status != 503:
            break
        page.wait_for_timeout(3000 * (attempt + 1))
    assert response.status == 201, f"creating the flow run: {response.status} {response.text()[:2000]}"
    flow_run_id = response.json()["id"]
    assert response.json()["parameters"]["preset"] == "tiny"
    page.get_by_role("button", name="View run").click()
    page.wait_for_url(f"**/runs/flow-run/{flow_run_id}**")

    # Wait for the UI to show the flow run as completed (reloading now and then).
    deadline, state = time.monotonic() + RUN_TIMEOUT_S, ""
    while time.monotonic() < deadline:
        page.reload(wait_until="networkidle")
        state = _state(page)
        if state in ("Completed", "Failed", "Crashed", "Cancelled"):
            break
        page.wait_for_timeout(10_000)
    page.screenshot(path=str(shots / "2-finished-run.png"), full_page=True)
    assert state == "Completed", f"flow run {flow_run_id} is {state!r}:\n{logs['worker'].read_text()[-4000:]}"

    # The store holds exactly that run, with 2 completed iterations.
    store = Store()
    with store.session() as s:
        (run,) = repo.list_runs(s)
        its = repo.iterations_of(s, run.id)
        assert run.prefect_flow_run_id == flow_run_id and run.status == RunStatus.completed
        assert (run.n_iterations, run.config["name"]) == (2, "tiny")
        assert [(i.index, i.status) for i in its] == [(1, RunStatus.completed), (2, RunStatus.completed)]
    store.dispose()

    # The plots linked from the last iteration's Prefect artifacts render in the UI.
    ui_base = page.url.split("/runs/flow-run/")[0]
    page.goto(f"{ui_base}/artifacts/key/run-{str(run.id)[:8]}-iter-2-plots", wait_until="networkidle")
    page.get_by_text("Flow run: iteration-2").first.wait_for()  # on the last iteration's flow run
    page.locator("a[href*='/artifacts/artifact/']").first.click()
    images = page.locator("img[alt^='metrics_plot'], img[alt^='reliability_iter_']")
    images.first.wait_for()
    expect(images).to_have_count(3)
    widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 300 for w in widths), widths
    page.screenshot(path=str(shots / "3-plots-artifact.png"), full_page=True)
