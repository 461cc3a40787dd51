"""Browser tests: the real pages in headless Chromium, served by a live server with the demo data.

Chromium is the system one (/usr/bin/chromium; shared/environment.md, "Browser tests"): never run
`playwright install`. Every test's page is watched: console errors, uncaught script errors, failed requests,
responses of 400 and more, and requests to any host but 127.0.0.1 (no CDN) fail the test unless the test
declared them with `page_watch.allow(...)`. Screenshots go to test-artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Frame, Page, Request, Response, expect
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from core.db import begin_write
from core.settings import load_settings
from migrations import runner
from tests.factories import PASSWORD

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOCAL_HOST = "127.0.0.1"
DEMO_PASSWORD = "labshare-demo"  # every demo user's
T = TypeVar("T")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@contextlib.contextmanager
def serving(directory: Path, fill: Callable[[Session], T]) -> Iterator[tuple[str, T]]:
    """The real app on a free port of 127.0.0.1, over a fresh migrated SQLite database in `directory` that
    `fill` fills (in one committed transaction); yields the app's URL and what `fill` returned."""
    from web import create_app

    url = f"sqlite:///{directory / 'labshare.db'}"
    runner.upgrade(url)
    app = create_app(load_settings(environ={}, env="test", database_url=url))
    engine = app.extensions["labshare.engine"]
    with Session(engine) as session:
        begin_write(session)
        facts = fill(session)
        session.commit()
    server = make_server(LOCAL_HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"labshare-server-{directory.name}", daemon=True)
    thread.start()
    try:
        yield f"http://{LOCAL_HOST}:{server.server_port}", facts
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        engine.dispose()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app with the demo data."""
    from web.demo.seed import seed_demo

    with serving(tmp_path_factory.mktemp("browser"), seed_demo) as (url, _facts):
        yield url


def submit_login(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Fill and send the login form (after dropping any earlier session); `base_url` "" for the live server's
    pages (the context's base URL). The factories' users have PASSWORD, the demo's DEMO_PASSWORD."""
    page.context.clear_cookies()
    page.goto(f"{base_url}/login")
    form = page.get_by_test_id("login-form")
    form.locator("input[name=email]").fill(email)
    form.locator("input[name=password]").fill(password)
    page.get_by_test_id("login-submit").click()


def sign_in(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """`submit_login`, and signed in."""
    submit_login(page, base_url, email, password)
    expect(page.get_by_test_id("user-menu")).to_be_visible()


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict, live_server: str) -> dict:
    # page.goto("/login") is relative to the live server; a desktop-sized window for the screenshots
    return {**browser_context_args, "base_url": live_server, "viewport": {"width": 1280, "height": 800}}


@dataclass
class PageWatch:
    """What went wrong on a test's pages, less what the test declared with `allow`.

    A request that Chromium aborted (net::ERR_ABORTED) because its page went on to another document before it
    finished, e.g. a click on a link while a font was still loading, is the test's doing, not the page's.
    """

    page: Page
    problems: list[str] = field(default_factory=list)
    allowed: list[tuple[int, re.Pattern[str]]] = field(default_factory=list)
    _navigations: dict[Frame, int] = field(default_factory=lambda: defaultdict(int))
    _started: dict[Request, int] = field(default_factory=dict)
    _aborted: list[Request] = field(default_factory=list)

    def allow(self, status: int, path: str) -> None:
        """A deliberate error response: `status` from a URL whose path matches the regex `path` (fully)."""
        self.allowed.append((status, re.compile(path)))

    def _is_allowed(self, status: int, url: str) -> bool:
        path = urlsplit(url).path
        return any(status == s and pattern.fullmatch(path) for s, pattern in self.allowed)

    def attach(self, page: Page) -> None:
        page.on("framenavigated", self._on_frame_navigated)
        page.on("request", self._on_request)
        page.on("requestfailed", self._on_request_failed)
        page.on("response", self._on_response)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught script error on {page.url}: {error}"))
        page.on("popup", self.attach)

    def _on_frame_navigated(self, frame: Frame) -> None:
        self._navigations[frame] += 1

    def _on_request(self, request: Request) -> None:
        self._started[request] = self._navigations[request.frame]
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob", "about") and parts.hostname != LOCAL_HOST:
            self.problems.append(f"request to another host: {request.method} {request.url}")

    def _on_request_failed(self, request: Request) -> None:
        if request.failure == "net::ERR_ABORTED":
            self._aborted.append(request)  # judged at the end, once it is known whether its page moved on
        else:
            self.problems.append(f"request failed: {request.method} {request.url} ({request.failure})")

    def _on_response(self, response: Response) -> None:
        if response.status >= 400 and not self._is_allowed(response.status, response.url):
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Chromium also logs each error response as a console error; _on_response judges those
        status = re.match(r"Failed to load resource: the server responded with a status of (\d+)", message.text)
        if status and self._is_allowed(int(status.group(1)), message.location.get("url", "")):
            return
        self.problems.append(f"console error: {message.text} (at {message.location.get('url')})")

    def settle_and_assert(self) -> None:
        """Waits for the pages' load events (fonts and images count too), then asserts nothing went wrong."""
        for open_page in self.page.context.pages:
            open_page.wait_for_load_state("load")
        problems = list(self.problems)
        for request in self._aborted:
            if self._navigations[request.frame] <= self._started.get(request, 0):
                problems.append(f"request aborted: {request.method} {request.url}")
        assert not problems, "problems on the page:\n" + "\n".join(problems)


@pytest.fixture(autouse=True)
def page_watch(page: Page) -> PageWatch:
    """Watches every browser test's page; checked when the test body has passed (pytest_runtest_call below)."""
    watch = PageWatch(page)
    watch.attach(page)
    return watch


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    # Checked as part of the test (not its teardown), so a failure is the test's and xfail covers it
    result = yield
    watch = getattr(item, "funcargs", {}).get("page_watch")
    if isinstance(watch, PageWatch):
        watch.settle_and_assert()
    return result


def _screenshot_stem(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")


@pytest.fixture
def screenshot(page: Page, request: pytest.FixtureRequest) -> Callable[..., Path]:
    """`screenshot()` or `screenshot("suffix")`: a full-page PNG named after the test, once fonts are loaded."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    stem = _screenshot_stem(request)

    def take(suffix: str = "") -> Path:
        path = SCREENSHOT_DIR / (f"{stem}-{suffix}.png" if suffix else f"{stem}.png")
        page.evaluate("document.fonts.ready.then(() => true)")
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path

    return take
