"""A small Chromium harness for the browser tests (tests/browser.rs and the
dashboard's): Debian's chromium driven headless by Python Playwright, pages
loaded from the gateway's own origin, console errors and page errors
collected, screenshots kept under target/browser/.

    with Browser() as browser:
        opened = browser.open(url, token, bypass_csp=True)
        opened.page.evaluate(...)
        opened.screenshot("after-login")
        assert not opened.errors, opened.errors

A test script talks to the Rust test that started the gateway through
`control(command)` (a line to the TETHER_CONTROL port, a line back), e.g.
`control("restart")`.
"""

import json
import os
import re
import shutil
import socket
import sys
from urllib.parse import urlsplit

CHROMIUM_INSTALL = "apt-get install chromium"
PLAYWRIGHT_INSTALL = "pip install playwright"


def fail(line):
    """Ends the script with one line on stderr (a missing prerequisite or a
    failed check); the Rust test shows it."""
    print(line, file=sys.stderr, flush=True)
    sys.exit(1)


def chromium_path():
    """The system Chromium (Playwright's own browser download is not used)."""
    explicit = os.environ.get("TETHER_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    fail("no chromium on PATH: the browser tests need `%s`" % CHROMIUM_INSTALL)


def artifacts_dir():
    """Where screenshots go: $TETHER_ARTIFACTS, else target/browser."""
    path = os.environ.get("TETHER_ARTIFACTS") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target", "browser"
    )
    os.makedirs(path, exist_ok=True)
    return path


def control(command):
    """Sends `command` to the Rust test (TETHER_CONTROL port) and returns
    its one-line answer."""
    port = int(os.environ["TETHER_CONTROL"])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(command.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode().strip()


class Opened:
    """A page loaded from the gateway, with what went wrong in it."""

    def __init__(self, page, name):
        self.page = page
        self.name = name
        self.errors = []  # console errors and uncaught page errors, as text
        self.allowed = []  # (pattern, count) of errors a test expects
        self.requests = []  # every URL the page requested
        self.shots = 0
        self.status = None  # the HTTP status of the page's answer

        def on_console(message):
            where = (message.location or {}).get("url", "")
            # The browser's own favicon probe is not the page's doing.
            if message.type == "error" and not where.endswith("/favicon.ico"):
                self._error("console: %s (%s)" % (message.text, where))

        page.on("console", on_console)
        page.on("pageerror", lambda error: self._error("page: %s" % error))
        page.on("request", lambda request: self.requests.append(request.url))

    def allow(self, pattern):
        """From now on, errors matching the regular expression `pattern`
        are expected (e.g. the browser's own line for a WebSocket refused
        while the test restarts the gateway) and not kept in `errors`."""
        self.allowed.append(re.compile(pattern))

    def _error(self, text):
        if not any(p.search(text) for p in self.allowed):
            self.errors.append(text)

    def screenshot(self, label=None):
        """Saves a full-page PNG under target/browser/ and returns its path."""
        self.shots += 1
        label = label or "%02d" % self.shots
        path = os.path.join(artifacts_dir(), "%s-%s.png" % (self.name, label))
        self.page.screenshot(path=path, full_page=True)
        return path

    def foreign_requests(self, allowed_origins=()):
        """Requests that left the page's origin (and `allowed_origins`)."""
        own = "%s://%s" % urlsplit(self.page.url)[:2]
        allowed = {own, *allowed_origins}
        return [
            url
            for url in self.requests
            if "%s://%s" % urlsplit(url)[:2] not in allowed and not url.startswith("data:")
        ]


class Browser:
    """Headless system Chromium; one context (fresh storage) per `open`."""

    def __init__(self):
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            fail("no Python playwright: the browser tests need `%s`" % PLAYWRIGHT_INSTALL)
        self._sync_playwright = sync_playwright
        self._executable = chromium_path()
        self._playwright = None
        self._browser = None
        self._contexts = []

    def __enter__(self):
        self._playwright = self._sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=self._executable,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        return self

    def __exit__(self, *exc):
        for context in self._contexts:
            context.close()
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()

    def open(self, url, token=None, *, token_key="tether.token", bypass_csp=False,
             name="page", viewport=(1280, 800), expect_ok=True):
        """Loads `url` (a page the gateway serves) in a fresh context; with
        `token`, `sessionStorage[token_key]` holds it before any script runs.
        `bypass_csp` lets the page's scripts reach the gateway's other
        listener (a cross-port WebSocket) despite `default-src 'self'`.
        The script fails unless the page answers 2xx (`expect_ok=False`
        keeps any answer; `opened.status` has it)."""
        context = self._browser.new_context(
            bypass_csp=bypass_csp,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        self._contexts.append(context)
        if token is not None:
            context.add_init_script(
                "sessionStorage.setItem(%s, %s)" % (_js_string(token_key), _js_string(token))
            )
        page = context.new_page()
        opened = Opened(page, name)
        response = page.goto(url)
        opened.status = response.status if response is not None else None
        if expect_ok and (response is None or not response.ok):
            status = response.status if response is not None else "no answer"
            fail("%s: %s" % (url, status))
        return opened


def _js_string(text):
    return json.dumps(text)
