"""End-to-end checks of the tether library against a real gateway.

Run by tests/python_client.rs, which starts the gateway and passes
TETHER_URL and the tokens (TETHER_TOKENS, JSON: name -> JWT). For the
reconnection part the script prints `restart` and waits for a line on stdin
after which the gateway is back on the same port.

Each check prints `ok NAME`; the first failure raises, and the exit status
is non-zero.
"""

import asyncio
import json
import os
import sys

import tether

URL = os.environ["TETHER_URL"]
TOKENS = json.loads(os.environ["TETHER_TOKENS"])
FAST = tether.Backoff(base=0.05, ceiling=0.5)


def ok(name):
    print("ok", name, flush=True)


async def expect_error(code, awaitable):
    """`code` is one code or a tuple of acceptable ones."""
    try:
        value = await awaitable
    except tether.TetherError as e:
        assert e.code in (code if isinstance(code, tuple) else (code,)), \
            "expected %s, got %s (%s)" % (code, e.code, e)
        return e
    raise AssertionError("expected error %s, got %r" % (code, value))


async def eventually(check, what, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out waiting for " + what
        await asyncio.sleep(0.02)


async def connect_forms():
    for auth in ("subprotocol", "header", "event"):
        client = await tether.connect(URL, token=TOKENS["alice"], auth=auth)
        assert client.session["sub"] == "alice", client.session
        assert await client.request("ping") is not None
        await client.close()
    ok("connect with the token as subprotocol, header and auth event")
    # A token from a function, asked again on each connection.
    client = await tether.connect(URL, token=lambda: TOKENS["alice"])
    assert client.session["sub"] == "alice"
    await client.close()
    await expect_error("connect_failed", tether.connect(URL, token="not.a.jwt"))
    await expect_error("auth_failed", tether.connect(URL, token="not.a.jwt", auth="event"))
    ok("bad tokens refused with codes")


def serve(host, slow_started):
    @host.handle("echo")
    def echo(data, request):
        return {"data": data, "sub": request["sub"]}

    @host.handle("greet", reply_event="greeting")
    async def greet(data, request):
        await asyncio.sleep(0.01)
        return "hello " + data["name"]

    @host.handle("fail")
    def fail(data, request):
        raise tether.HostError("out_of_stock", "none left")

    @host.handle("crash")
    def crash(data, request):
        raise RuntimeError("a bug with internals")

    @host.handle("not_json")
    def not_json(data, request):
        return object()

    @host.handle("slow", permission="slow.call")
    async def slow(data, request):
        slow_started.set()
        await asyncio.sleep(data or 3)
        return "late"


async def main():
    await connect_forms()

    host = await tether.host(URL, token=TOKENS["host"], backoff=FAST)
    slow_started = asyncio.Event()
    serve(host, slow_started)
    await host.registered()
    alice = await tether.connect(URL, token=TOKENS["alice"], backoff=FAST)
    bob = await tether.connect(URL, token=TOKENS["bob"], backoff=FAST)

    echoed = await alice.request("echo", {"n": 1})
    assert echoed == {"data": {"n": 1}, "sub": "alice"}, echoed
    assert await alice.request("greet", {"name": "Ann"}) == "hello Ann"
    ok("request and reply through a host")

    error = await expect_error("out_of_stock", alice.request("fail"))
    assert error.message == "none left", error.message
    error = await expect_error("internal_error", alice.request("crash"))
    assert "internals" not in error.message
    await expect_error("internal_error", alice.request("not_json"))
    await expect_error("forbidden", bob.request("slow"))
    await expect_error("unknown_event", alice.request("nobody.serves.this"))
    ok("error replies carry the code")

    await expect_error("timeout", alice.request("slow", 2, timeout=0.2))
    ok("timeout")

    notes = []
    alice.on("note")(lambda data, message: notes.append(message))
    assert (await alice.subscribe("chat_1")) == {"room": "chat_1"}
    published = await bob.publish("chat_1", "note", {"text": "hi"})
    assert published == {"room": "chat_1", "delivered": 1}, published
    await eventually(lambda: notes, "the note")
    assert notes[0]["data"] == {"text": "hi"} and notes[0]["room"] == "chat_1", notes
    assert notes[0]["from"] == "bob", notes
    await expect_error("room_not_allowed", alice.subscribe("secret"))
    ok("subscribe and publish")

    # Reconnection: a request in flight fails (the gateway may fail it
    # first, as its host goes, or the connection may end first); the
    # client comes back, in its rooms; the host registers again.
    sessions, host_sessions = [], []
    alice.on("authenticated")(lambda data, message: sessions.append(data))
    # A host's `authenticated` handlers run once it has registered again.
    host.on("authenticated")(lambda data, message: host_sessions.append(data))
    slow_started.clear()
    in_flight = asyncio.ensure_future(alice.request("slow", 30, timeout=30))
    await asyncio.wait_for(slow_started.wait(), 5)
    print("restart", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    assert line.strip() == "restarted", line
    await expect_error(("disconnected", "host_unavailable"), in_flight)
    await eventually(lambda: sessions and host_sessions, "alice and the host to reconnect")
    echoed = await alice.request("echo", "again", timeout=10)
    assert echoed == {"data": "again", "sub": "alice"}, echoed
    notes.clear()
    published = await bob.publish("chat_1", "note", {"text": "back"})
    assert published["delivered"] == 1, published
    await eventually(lambda: notes, "the note after the restart")
    assert notes[0]["data"] == {"text": "back"}, notes
    ok("reconnect, re-subscribe and re-register")

    for client in (alice, bob, host):
        await client.close()
    await expect_error("closed", alice.request("ping", timeout=0.2))
    ok("close")


if __name__ == "__main__":
    asyncio.run(main())
