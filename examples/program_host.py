#!/usr/bin/env python3
"""A program as a tether host (SPEC §11): tether starts it, and it speaks the
host protocol (SPEC §6) as one JSON message per line on stdin and stdout.
No token, no socket: tether gives it the permissions its settings entry says.

    "hosts": [{"name": "dice", "command": ["python3", "examples/program_host.py"]}]

Clients then send {"event": "dice.roll", "data": {"sides": 20}, "requestId": 1}.
It exits when its stdin ends (tether stopping, or killed). Log to stderr:
tether logs each line as `host dice: ...`.
"""
import json
import random
import sys


def send(message):
    print(json.dumps(message), flush=True)


send({"event": "host.register", "data": {"events": {"dice.roll": None}}})
print("dice host ready", file=sys.stderr, flush=True)
for line in sys.stdin:
    message = json.loads(line)
    if message.get("event") != "host.request":
        continue
    request = message["data"]
    sides = (request.get("data") or {}).get("sides", 6)
    send({"event": "host.reply", "data": {"id": request["id"], "event": "dice.rolled",
          "data": {"sides": sides, "value": random.randint(1, max(1, int(sides)))}}})
