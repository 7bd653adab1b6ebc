#!/usr/bin/env python3
"""Run cross-built tether binaries under qemu-user and talk to them from the host.

    python3 cross/smoke.py [--dist DIR] [--json FILE] TARGET...

For each TARGET, the binary DIR/tether-TARGET (default target/dist) is run under
the matching qemu-user with a loopback-only config on port 0:

  * `tether --version` and `tether check-config` on the packaged
    systemd/settings.json (the .deb's /etc/tether/settings.json);
  * `tether serve`: the time to the "listening" log line and the RSS of the qemu
    process right then (qemu's own memory included);
  * a WebSocket client on the host (Python `websockets`): Alice connects with a
    token minted by the ARM `tether token` in the query, Bob authenticates with
    an `auth` message; ping/pong, whoami, subscribe, a room publish that Bob
    receives, an event Alice may not publish (`forbidden`);
  * SIGTERM: the still-connected client gets close 1001 and the process exits 0.

Exits 1 on the first failure with the server's log. Prints one summary line per
target (size, start-up time, RSS) and, with --json, writes them to FILE.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "smoke-test-secret-0123456789abcdef0123456789"

QEMU = {
    "aarch64-unknown-linux-gnu": ["qemu-aarch64", "-cpu", "cortex-a53", "-L", "/usr/aarch64-linux-gnu"],
    "armv7-unknown-linux-gnueabihf": ["qemu-arm", "-cpu", "cortex-a7", "-L", "/usr/arm-linux-gnueabihf"],
    "aarch64-unknown-linux-musl": ["qemu-aarch64", "-cpu", "cortex-a53"],
    "armv7-unknown-linux-musleabihf": ["qemu-arm", "-cpu", "cortex-a7"],
    # The Pi Zero / Pi 1 CPU: an ARMv7 instruction in the binary traps here.
    "arm-unknown-linux-musleabihf": ["qemu-arm", "-cpu", "arm1176"],
}


class SmokeError(Exception):
    pass


def check(cond, what):
    if not cond:
        raise SmokeError(what)


def run(cmd, env, timeout=60):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SmokeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def recv(ws, timeout=20):
    return json.loads(ws.recv(timeout=timeout))


def request(ws, msg):
    ws.send(json.dumps(msg))
    return recv(ws)


class Gateway:
    """`tether serve` under qemu, its stderr collected by a thread."""

    def __init__(self, cmd, env, cwd):
        self.lines = []
        self.listening = threading.Event()
        self.port = None
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self.ready_after = time.monotonic() - self.started
                self.listening.set()

    def log(self):
        return "\n".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def smoke(target, dist):
    binary = os.path.join(dist, f"tether-{target}")
    check(os.path.isfile(binary), f"{binary} does not exist (run cross/build.sh {target})")
    qemu = QEMU[target] + [binary]
    work = tempfile.mkdtemp(prefix=f"tether-smoke-{target}-")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "JWT_SECRET": SECRET,
           "STATE_DIRECTORY": os.path.join(work, "state")}
    config = os.path.join(work, "settings.json")
    with open(config, "w") as f:
        json.dump({"server": {"websocket": {"host": "127.0.0.1", "port": 0},
                              "health": {"host": "127.0.0.1", "port": 0}},
                   "log": {"level": "info"}}, f)

    version = run(qemu + ["--version"], env).strip()
    check(version.startswith("tether "), f"--version printed {version!r}")
    run(qemu + ["check-config", "--config", os.path.join(ROOT, "systemd", "settings.json")], env)

    gw = Gateway(qemu + ["serve", "--config", config], env, work)
    try:
        check(gw.listening.wait(60), f"no 'listening' line within 60 s:\n{gw.log()}")
        rss_start = rss_kib(gw.proc.pid)
        port = gw.port
        token_a = run(qemu + ["token", "--config", config, "--sub", "alice",
                              "--permissions", "publish", "--rooms", "lobby", "--ttl", "10m"], env).strip()
        token_b = run(qemu + ["token", "--config", config, "--sub", "bob", "--rooms", "lobby"], env).strip()
        url = f"ws://127.0.0.1:{port}/"

        with connect(url + f"?token={token_a}", open_timeout=20) as alice, \
                connect(url, open_timeout=20) as bob:
            hello = recv(alice)
            check(hello["event"] == "connected" and hello["data"]["authenticated"] is True, hello)
            authed = recv(alice)
            check(authed["event"] == "authenticated" and authed["data"]["sub"] == "alice", authed)

            check(recv(bob)["data"]["authenticated"] is False, "bob connected without a token")
            ws_auth = request(bob, {"event": "auth", "data": {"token": token_b}, "requestId": "a1"})
            check(ws_auth["event"] == "authenticated" and ws_auth["requestId"] == "a1"
                  and ws_auth["data"]["rooms"] == ["lobby"], ws_auth)

            pong = request(alice, {"event": "ping", "requestId": 7})
            check(pong["event"] == "pong" and pong["requestId"] == 7
                  and abs(pong["data"]["time"] - time.time()) < 120, pong)
            who = request(bob, {"event": "whoami", "requestId": 1})
            check(who["event"] == "whoami" and who["data"]["sub"] == "bob", who)

            sub = request(bob, {"event": "subscribe", "data": {"room": "lobby"}, "requestId": 2})
            check(sub["event"] == "subscribed" and sub["data"]["room"] == "lobby", sub)
            pub = request(alice, {"event": "publish", "requestId": 3,
                                  "data": {"room": "lobby", "event": "chat", "data": {"text": "hi from the host"}}})
            check(pub["event"] == "published" and pub["data"]["delivered"] == 1, pub)
            got = recv(bob)
            check(got == {"event": "chat", "data": {"text": "hi from the host"}, "room": "lobby",
                          "from": "alice"}, got)

            denied = request(bob, {"event": "publish", "requestId": 4,
                                   "data": {"room": "lobby", "event": "chat", "data": 1}})
            check(denied["event"] == "error" and denied["data"]["code"] == "forbidden"
                  and denied["requestId"] == 4, denied)
            rss_after = rss_kib(gw.proc.pid)

            gw.proc.send_signal(signal.SIGTERM)
            try:
                while True:
                    bob.recv(timeout=20)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                check(code == 1001, f"close code on SIGTERM: {code}")
        status = gw.proc.wait(timeout=30)
        check(status == 0, f"exit status after SIGTERM: {status}\n{gw.log()}")
        for line in gw.lines:
            check(token_a not in line and token_b not in line and SECRET not in line,
                  f"a secret appears in the log: {line}")
        return {"target": target, "bytes": os.path.getsize(binary), "ready_s": round(gw.ready_after, 2),
                "rss_kib_start": rss_start, "rss_kib_after_session": rss_after, "qemu": " ".join(QEMU[target])}
    except (SmokeError, subprocess.TimeoutExpired, OSError, KeyError, TypeError, ValueError) as e:
        raise SmokeError(f"{target}: {e}\n--- tether log ---\n{gw.log()}") from e
    finally:
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", default=os.path.join(ROOT, "target", "dist"))
    p.add_argument("--json")
    p.add_argument("targets", nargs="+", choices=sorted(QEMU))
    args = p.parse_args()
    results = []
    for target in args.targets:
        t0 = time.monotonic()
        try:
            r = smoke(target, args.dist)
        except SmokeError as e:
            print(f"smoke FAILED: {e}", file=sys.stderr)
            return 1
        results.append(r)
        print(f"smoke ok  {target:32} {r['bytes']:>9} bytes  listening after {r['ready_s']:5.2f} s  "
              f"qemu RSS {r['rss_kib_start']} KiB at start, {r['rss_kib_after_session']} KiB after the "
              f"session  ({time.monotonic() - t0:.1f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(f"{len(results)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
