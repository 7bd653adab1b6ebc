"""What an open dashboard costs the gateway (SPEC §14, "cost nothing
measurable while no dashboard is open, and little while one is").

Starts `tether serve` (a release build, given by --tether) and reads its CPU
time (utime + stime of /proc/PID/stat) over --seconds per phase: idle without
and with the dashboard open in headless chromium (tests/browser/harness.py;
the page polls every 3 s and watches the sampled tail), then under a steady
publish load (one publisher at --rate messages/s into one room of
--subscribers members) without and with the page, twice in turn so that the
machine's own noise shows. Prints one line per phase.

    cargo build --release
    python3 benches/dashboard_cpu.py --tether target/release/tether --seconds 30
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "browser"))
SECRET = "dashboard-cpu-measurement-secret-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of `pid`, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Load:
    """One publisher at `rate`/s into room `lobby`, `members` reading it."""

    def __init__(self, url, tokens, rate, members):
        self.url, self.tokens, self.rate, self.members = url, tokens, rate, members
        self.sent = 0
        self.received = 0
        self.stop = False
        self.ready = threading.Event()

    async def member(self, token):
        import websockets

        async with websockets.connect(self.url, additional_headers={"Authorization": "Bearer " + token}) as ws:
            async for _ in ws:
                self.received += 1
                if self.stop:
                    return

    async def publisher(self, token):
        import websockets

        async with websockets.connect(self.url, additional_headers={"Authorization": "Bearer " + token}) as ws:
            await ws.recv()
            await ws.recv()

            async def drain():
                async for _ in ws:
                    pass

            reader = asyncio.ensure_future(drain())
            self.ready.set()
            start = time.monotonic()
            while not self.stop:
                due = int((time.monotonic() - start) * self.rate)
                while self.sent < due:
                    body = {"room": "lobby", "event": "tick", "data": {"n": self.sent, "pad": "x" * 100}}
                    await ws.send(json.dumps({"event": "publish", "data": body}))
                    self.sent += 1
                await asyncio.sleep(0.005)
            reader.cancel()

    async def run(self):
        members = [asyncio.ensure_future(self.member(self.tokens["member"])) for _ in range(self.members)]
        await asyncio.sleep(1)
        await self.publisher(self.tokens["publisher"])
        for m in members:
            m.cancel()

    def start(self):
        thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)
        thread.start()
        self.ready.wait(20)


def measure(pid, seconds, load, label):
    sent, received = load.sent, load.received
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu_seconds(pid) - before, time.monotonic() - start
    print(
        "%-22s gateway CPU %6.2f s in %5.1f s = %5.2f %% of a core; %d published, %d delivered"
        % (label, used, wall, 100 * used / wall, load.sent - sent, load.received - received),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tether", default=os.path.join(HERE, "..", "target", "release", "tether"))
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=20)
    args = parser.parse_args()
    args.tether = os.path.abspath(args.tether)
    port, health = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        settings = os.path.join(tmp, "settings.json")
        with open(settings, "w") as f:
            json.dump({
                "server": {"websocket": {"host": "127.0.0.1", "port": port},
                           "health": {"host": "127.0.0.1", "port": health}},
                "limits": {"max_messages_per_minute": 10_000_000, "max_connections_per_ip": 1000,
                           "max_connects_per_ip_per_hour": 100_000},
                "log": {"level": "warn"},
            }, f)
        env = dict(os.environ, JWT_SECRET=SECRET)

        def token(*args):
            out = subprocess.run([args_tether, "token", "--config", settings, *args],
                                 env=env, cwd=tmp, check=True, capture_output=True, text=True)
            return out.stdout.strip()

        args_tether = args.tether
        tokens = {
            "admin": token("--sub", "ops", "--permissions", "admin"),
            "member": token("--sub", "member", "--rooms", "lobby"),
            "publisher": token("--sub", "publisher", "--permissions", "publish", "--rooms", "lobby"),
        }
        gateway = subprocess.Popen([args.tether, "serve", "--config", settings], env=env, cwd=tmp,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from harness import Browser

        page = "http://127.0.0.1:%d/" % health
        try:
            with Browser() as browser:
                time.sleep(1)
                load = Load("ws://127.0.0.1:%d/" % port, tokens, args.rate, args.subscribers)
                measure(gateway.pid, args.seconds, load, "idle, no dashboard")
                with Dashboard(browser, page, tokens["admin"]):
                    measure(gateway.pid, args.seconds, load, "idle, dashboard open")
                load.start()
                time.sleep(2)
                print("load: %d msgs/s into one room of %d members"
                      % (args.rate, args.subscribers), flush=True)
                # Alternating, so that the machine's own noise shows.
                for _ in range(2):
                    measure(gateway.pid, args.seconds, load, "load, no dashboard")
                    with Dashboard(browser, page, tokens["admin"]) as opened:
                        measure(gateway.pid, args.seconds, load, "load, dashboard open")
                        tail = opened.page.evaluate("() => document.querySelectorAll('#tail li').length")
                        print("  (the page shows %d tail entries; errors: %s)" % (tail, opened.errors))
                load.stop = True
        finally:
            gateway.terminate()
            gateway.wait(10)


class Dashboard:
    """The page open (signed in, feed live) for the `with` block."""

    def __init__(self, browser, page, token):
        self.browser, self.page, self.token = browser, page, token

    def __enter__(self):
        self.opened = self.browser.open(self.page, self.token, name="cpu")
        self.opened.page.wait_for_function(
            "() => document.querySelector('#feed-state').textContent === 'feed live'", timeout=20000)
        time.sleep(2)
        return self.opened

    def __exit__(self, *exc):
        self.opened.page.context.close()
        time.sleep(2)


if __name__ == "__main__":
    main()
