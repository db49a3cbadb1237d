"""Fixtures for the end-to-end browser tests: Debian's Chromium driven by Playwright against
the platform served for real — Lango and the Daraja sandbox (tests/served.py, threads on
loopback), real PostgreSQL and Redis (tests/conftest.py) and an RQ worker (`lango worker`,
a subprocess with the same configuration).

The browser is never downloaded: it is /usr/bin/chromium (Debian's packages `chromium` and
`chromium-driver`; `./dev.sh test` installs them when it runs as root, .ci/run always), or
the executable LANGO_BROWSER names. Without one the browser tests SKIP, naming the command
that installs it — unless LANGO_REQUIRE_BROWSER=1 (CI sets it), where they FAIL.

Output (screenshots, worker.log of the RQ worker) goes to test-output/browser/ in the
checkout, or under the directory LANGO_TEST_OUTPUT names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT, make_config

DEFAULT_BROWSER = "/usr/bin/chromium"
INSTALL_COMMAND = "apt-get install -y chromium chromium-driver"
# Headless, and quiet: without the background-networking flags Chromium calls Google hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LANGO = Path(sys.executable).parent / "lango"


def output_dir() -> Path:
    """Where the browser tests leave screenshots and logs (created on demand)."""
    path = Path(os.environ.get("LANGO_TEST_OUTPUT") or ROOT / "test-output") / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unavailable(reason: str):
    """Skip the browser tests (a developer's machine without Chromium), or fail them when
    LANGO_REQUIRE_BROWSER=1 (CI must run them)."""
    if os.environ.get("LANGO_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (LANGO_REQUIRE_BROWSER=1: the browser tests must run)")
    pytest.skip(reason)


def browser_executable() -> str:
    wanted = os.environ.get("LANGO_BROWSER") or DEFAULT_BROWSER
    found = shutil.which(wanted)
    if not found:
        _unavailable(
            f"no Chromium at {wanted}: install it with `sudo {INSTALL_COMMAND}` "
            "(./dev.sh test does it when run as root), or set LANGO_BROWSER to one"
        )
    return found


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One headless Chromium for the session (each test gets its own context)."""
    executable = browser_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extras install it
        _unavailable("the playwright package is missing: ./dev.sh test installs it")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    except Exception as error:
        playwright.stop()
        _unavailable(f"Chromium at {executable} did not start: {error}")
    yield browser
    browser.close()
    playwright.stop()


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="module")
def lango_worker(app, database_url, redis_url) -> Iterator[Worker]:
    """`lango worker` (one process, with RQ's scheduler) on the test run's database and
    Redis, for the browser tests' module only: later tests run their queues themselves."""
    from redis import Redis
    from rq import Worker as RqWorker

    log = output_dir() / f"worker{os.environ.get('PYTEST_XDIST_WORKER', '')}.log"
    env = {**os.environ, **make_config(database_url, redis_url), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(LANGO), "worker", "--processes", "1"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(process, log)
    connection = Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while not any(w.pid == process.pid for w in RqWorker.all(connection=connection)):
        if not worker.alive() or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"`lango worker` did not start:\n{worker.tail()}")
        time.sleep(0.2)
    connection.close()
    yield worker
    _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture
def live_platform(platform, lango_worker):
    """Lango and the sandbox served, and the worker running; yields Lango's ServedApp."""
    assert lango_worker.alive(), f"the worker died:\n{lango_worker.tail()}"
    return platform


@dataclass
class Visit:
    """One test's browser context and page, with everything the page asked of the network."""

    page: object  # playwright.sync_api.Page
    origin: str  # http://127.0.0.1:<LANGO_PORT>
    name: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors
    server_errors: list[str] = field(default_factory=list)  # responses with status >= 500

    def url(self, path: str) -> str:
        return self.origin + path

    def foreign_requests(self) -> list[str]:
        """Requests to any host but the app's own (data:/blob: URLs reach no host)."""
        return [url for url in self.requests if not self._own(url)]

    def _own(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return True
        return f"{parts.scheme}://{parts.netloc}" == self.origin

    def assert_clean(self) -> None:
        """Every request went to the app itself; no script error; no 5xx answer."""
        assert self.requests, "the watcher saw no requests"
        assert not self.foreign_requests(), f"requests to other hosts: {self.foreign_requests()}"
        assert not self.errors, f"errors in the pages' console: {self.errors}"
        assert not self.server_errors, f"server errors: {self.server_errors}"

    def screenshot(self, suffix: str = "") -> Path:
        """A full-page screenshot: test-output/browser/<test name><suffix>.png."""
        path = output_dir() / f"{self.name}{suffix}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


@pytest.fixture
def visit(request, chromium, live_platform) -> Iterator[Visit]:
    """A fresh browser context on the served Lango (relative URLs resolve against it) with a
    network and console watcher; confirmation dialogs are accepted. On failure a screenshot
    of where the page stood is saved as <test name>-failed.png."""
    context = chromium.new_context(
        base_url=live_platform.url,
        viewport={"width": 1280, "height": 900},
        accept_downloads=True,
        permissions=["clipboard-read", "clipboard-write"],
        locale="en-KE",
        timezone_id="Africa/Nairobi",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    current = Visit(page, live_platform.url, _safe_name(request.node.name))
    (output_dir() / f"{current.name}-failed.png").unlink(missing_ok=True)

    def on_response(response) -> None:
        if response.status >= 500:
            current.server_errors.append(f"{response.status} {response.url}")

    def on_console(message) -> None:
        if message.type == "error":
            current.errors.append(f"console: {message.text} ({page.url})")

    context.on("request", lambda sent: current.requests.append(sent.url))
    context.on("response", on_response)
    page.on("pageerror", lambda error: current.errors.append(f"uncaught: {error}"))
    page.on("console", on_console)
    page.on("dialog", lambda dialog: dialog.accept())
    yield current
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        with contextlib.suppress(Exception):  # the test's own failure is what matters
            current.screenshot("-failed")
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
