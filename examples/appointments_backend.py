#!/usr/bin/env python3
"""An HTTP backend as a tether host (SPEC §11), standard library only: the
`appointment.*` flow of seed 001 (Easy!Appointments). tether POSTs each client
request to it as the body of `host.request` with `Authorization: Bearer JWT`
(signed with the gateway's secret, `sub` "tether", permission `host`); it
answers {"event", "data"} or {"error": {"code", "message"}}. New, changed and
cancelled appointments are also published to the `calendar` room through the
gateway's /api/publish, with the token the gateway sent (it carries `host`).

    JWT_SECRET=... python3 examples/appointments_backend.py 8000

    "hosts": [{"name": "appointments", "url": "http://127.0.0.1:8000/tether/",
               "events": {"appointment.list": "appointments.view",
                          "appointment.create": "appointments.edit",
                          "appointment.update": "appointments.edit",
                          "appointment.cancel": "appointments.edit"},
               "notify": ["client_joined"]}]

Env: JWT_SECRET (to verify the caller), TETHER_HEALTH_URL (default
http://127.0.0.1:8081, where /api/publish is).
"""
import base64
import hashlib
import hmac
import itertools
import json
import os
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("JWT_SECRET", "").encode()
HEALTH = os.environ.get("TETHER_HEALTH_URL", "http://127.0.0.1:8081")
appointments = {}
ids = itertools.count(1)


def caller_claims(authorization):
    """The claims of the gateway's HS256 token, or None when it does not verify."""
    try:
        head, payload, signature = authorization.removeprefix("Bearer ").split(".")
        mac = hmac.new(SECRET, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.urlsafe_b64encode(mac).rstrip(b"=").decode(), signature):
            return None
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims if claims.get("exp", 0) > time.time() else None
    except ValueError:
        return None


def publish(token, event, data):
    """Best effort: clients in `calendar` hear of the change."""
    body = json.dumps({"event": event, "data": data, "room": "calendar"}).encode()
    request = urllib.request.Request(f"{HEALTH}/api/publish", body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=2).close()
    except OSError as e:
        print(f"publish {event} failed: {e}", file=sys.stderr)


def handle(request, token):
    event, data = request.get("event"), request.get("data") or {}
    if event == "appointment.list":
        return {"event": "appointment.list", "data": {"appointments": list(appointments.values())}}
    if event == "appointment.create":
        appointment = {"id": next(ids), "start": data.get("start"), "provider": data.get("provider"),
                       "customer": request.get("sub"), "status": "booked"}
        appointments[appointment["id"]] = appointment
        publish(token, "appointment.created", appointment)
        return {"event": "appointment.created", "data": appointment}
    appointment = appointments.get(data.get("id"))
    if appointment is None:
        return {"error": {"code": "not_found", "message": "no such appointment"}}
    if event == "appointment.update":
        appointment.update({k: data[k] for k in ("start", "provider") if k in data})
        publish(token, "appointment.updated", appointment)
        return {"event": "appointment.updated", "data": appointment}
    if event == "appointment.cancel":
        appointment["status"] = "cancelled"
        publish(token, "appointment.cancelled", appointment)
        return {"event": "appointment.cancelled", "data": appointment}
    return {"error": {"code": "unknown_event", "message": f"{event} is not served here"}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as tether uses it

    def do_POST(self):
        authorization = self.headers.get("Authorization", "")
        if caller_claims(authorization) is None:
            return self.answer(401, {"error": {"code": "unauthorized", "message": "bad token"}})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if body.get("event", "").startswith("host.client_"):
            print(f"notice: {body}", file=sys.stderr)
            return self.answer(200, {})
        self.answer(200, handle(body, authorization.removeprefix("Bearer ")))

    def answer(self, status, message):
        data = json.dumps(message).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"appointments backend on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()
