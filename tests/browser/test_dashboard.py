"""The dashboard in Chromium (run by tests/browser.rs): a non-admin token is
refused; an admin signs in; clients appear and disappear without a reload;
kick and publish work; subs that are HTML/JS payloads show as text and run
nothing; the sampled tail shows room messages; a hidden tab stops polling;
every request stays on the gateway's origin; no JavaScript error.
Screenshots of each view go to target/browser/. Prints `ok NAME` per check."""

import json
import os
import sys
import time
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(__file__))
from harness import Browser, fail  # noqa: E402

URL = os.environ["TETHER_URL"]  # ws://127.0.0.1:PORT/ (the clients' listener)
PAGE = os.environ["TETHER_DASHBOARD"]  # http://127.0.0.1:HEALTH/
TOKENS = json.loads(os.environ["TETHER_TOKENS"])
EVIL_SUBS = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script>"]
WAIT_MS = 15000  # the page polls every 3 s


def ok(name):
    print("ok %s" % name, flush=True)


def check(opened, name, condition, why):
    if not condition:
        opened.screenshot("failed-" + name)
        fail("%s failed: %s" % (name, why))


def wait_for(opened, name, script, arg=None):
    """Waits (up to WAIT_MS) until `script` (a JS function) returns truthy in the page."""
    try:
        opened.page.wait_for_function(script, arg=arg, timeout=WAIT_MS)
    except Exception as e:
        opened.screenshot("failed-" + name)
        fail("%s failed: %s" % (name, str(e).splitlines()[0]))


def client(token):
    """A WebSocket client of the gateway, authenticated by its handshake."""
    from websockets.sync.client import connect

    ws = connect(URL, additional_headers={"Authorization": "Bearer " + token})
    for expected in ("connected", "authenticated"):
        event = json.loads(ws.recv(timeout=5))["event"]
        if event != expected:
            fail("client got %s, not %s" % (event, expected))
    return ws


def next_event(ws, event, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.time())))
        if message.get("event") == event:
            return message
    fail("no %s within %s s" % (event, timeout))


def close_code(ws, timeout=10):
    from websockets.exceptions import ConnectionClosed

    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.time()))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        return None
    return None


ROW = "(sub) => [...document.querySelectorAll('#connections tbody tr')].some((tr) => tr.dataset.sub === sub)"
NO_ROW = "(sub) => ![...document.querySelectorAll('#connections tbody tr')].some((tr) => tr.dataset.sub === sub)"


def refused(browser):
    opened = browser.open(PAGE, name="dashboard")
    opened.page.fill("#token", TOKENS["user"])
    opened.page.click("#login-form button")
    wait_for(opened, "refused", "() => document.querySelector('#login-error').textContent.includes('refused')")
    check(opened, "refused", opened.page.is_hidden("#board"), "the board is shown")
    check(opened, "refused", opened.page.evaluate("() => sessionStorage.length") == 0, "token kept")
    opened.screenshot("refused")
    # The browser reports the 401 itself; nothing else may go wrong.
    errors = [e for e in opened.errors if "401" not in e]
    check(opened, "refused", not errors, errors)
    ok("non_admin_refused")
    opened.page.context.close()


def main():
    with Browser() as browser:
        refused(browser)

        opened = browser.open(PAGE, name="dashboard")
        sockets, dialogs = [], []
        opened.page.on("websocket", lambda ws: sockets.append(ws.url))
        opened.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        opened.screenshot("login")
        opened.page.fill("#token", TOKENS["admin"])
        opened.page.click("#login-form button")
        wait_for(opened, "login", "() => document.querySelector('#feed-state').textContent === 'feed live'")
        check(opened, "login", opened.page.is_hidden("#login"), "the login form stays")
        stored = opened.page.evaluate("() => [sessionStorage.getItem('tether.token'), localStorage.length]")
        check(opened, "login", stored == [TOKENS["admin"], 0], "token not only in sessionStorage")
        ok("login")

        alice = client(TOKENS["alice"])
        wait_for(opened, "appears", ROW, "alice")
        ok("appears")
        alice.close()
        wait_for(opened, "disappears", NO_ROW, "alice")
        ok("disappears")

        evil = [client(TOKENS["evil_img"]), client(TOKENS["evil_script"])]
        publisher = client(TOKENS["publisher"])
        for n, payload in enumerate(EVIL_SUBS):
            publisher.send(json.dumps({"event": "publish", "data": {
                "room": "lobby", "event": "said", "data": {"n": n, "html": payload}}}))
        for sub in EVIL_SUBS:
            wait_for(opened, "escaped", ROW, sub)
        wait_for(opened, "tail", "() => document.querySelectorAll('#tail li').length >= 2")
        wait_for(opened, "escaped", "(subs) => subs.every((s) => document.querySelector('#rooms').textContent.includes(s))", EVIL_SUBS)
        shown = opened.page.evaluate("""() => ({
            cells: [...document.querySelectorAll('#connections tbody tr')].map((tr) => tr.cells[0].textContent),
            injected: document.querySelectorAll('main img, main script, #tail b').length,
            tail: document.querySelector('#tail').textContent,
        })""")
        for sub in EVIL_SUBS:
            check(opened, "escaped", sub in shown["cells"], "%r not shown as text: %s" % (sub, shown["cells"]))
            check(opened, "escaped", sub.replace('"', '\\"') in shown["tail"] or sub in shown["tail"], "tail lacks %r" % sub)
        check(opened, "escaped", shown["injected"] == 0, "elements were injected")
        time.sleep(1)
        check(opened, "escaped", not dialogs, "a dialog opened: %s" % dialogs)
        opened.screenshot("escaped")
        ok("escaped")
        ok("tail")
        for ws in evil:
            ws.close()

        bob = client(TOKENS["bob"])
        opened.page.fill("#pub-room", "lobby")
        opened.page.fill("#pub-event", "notice")
        opened.page.fill("#pub-data", '{"text": "from the dashboard"}')
        opened.page.click("#publish-form button")
        got = next_event(bob, "notice")
        check(opened, "publish", got.get("data") == {"text": "from the dashboard"} and got.get("room") == "lobby", got)
        wait_for(opened, "publish", "() => document.querySelector('#publish-result').textContent.includes('Delivered to')")
        opened.screenshot("published")
        ok("publish")

        carol = client(TOKENS["carol"])
        wait_for(opened, "kick", ROW, "carol")
        opened.page.click("#connections tbody tr[data-sub='carol'] button.kick")
        kicked = next_event(carol, "kicked")
        check(opened, "kick", kicked["data"]["reason"] == "kicked from the dashboard", kicked)
        check(opened, "kick", close_code(carol) == 4010, "no close 4010")
        wait_for(opened, "kick", NO_ROW, "carol")
        wait_for(opened, "kick", "() => document.querySelector('#kick-result').textContent.startsWith('Kicked carol')")
        opened.screenshot("kicked")
        ok("kick")

        # A hidden tab polls nothing and lets its feed go; back, both resume.
        hide = """(hidden) => {
            Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
        opened.page.evaluate(hide, True)
        time.sleep(0.5)
        before = len(opened.requests)
        time.sleep(7)
        check(opened, "hidden", len(opened.requests) == before, "polled while hidden: %s" % opened.requests[before:])
        opened.page.evaluate(hide, False)
        wait_for(opened, "hidden", "() => document.querySelector('#feed-state').textContent === 'feed live'")
        time.sleep(3.5)
        check(opened, "hidden", len(opened.requests) > before, "no polling once visible")
        ok("hidden_pauses")

        publisher.send(json.dumps({"event": "publish", "data": {"room": "lobby", "event": "said", "data": {"text": "hello"}}}))
        bob.send(json.dumps({"event": "subscribe", "data": {"room": "lobby"}}))
        time.sleep(3.5)
        opened.page.evaluate("() => window.scrollTo(0, 0)")
        opened.screenshot("board")

        own = "%s://%s" % urlsplit(PAGE)[:2]
        foreign = opened.foreign_requests()
        ws_origin = "ws://%s" % urlsplit(PAGE).netloc
        foreign += [url for url in sockets if not url.startswith(ws_origin + "/")]
        check(opened, "same_origin", not foreign, "requests left %s: %s" % (own, foreign))
        check(opened, "same_origin", sockets, "no feed WebSocket was opened")
        ok("same_origin")
        check(opened, "clean", not opened.errors, opened.errors)
        ok("clean")
        for ws in (publisher, bob):
            ws.close()


if __name__ == "__main__":
    main()
