"""A tether host: serves client events with decorated handlers, registers
them on every (re)connection."""

import asyncio
import logging

from websockets.exceptions import ConnectionClosed

from .client import Client, TetherError, _call

log = logging.getLogger("tether")


class HostError(TetherError):
    """Raised by a handler: the client gets an error with this code."""

    def __init__(self, code, message=""):
        super().__init__(code, message)


class Host(Client):
    """Use `await tether.host(url, token=...)` rather than this directly."""

    def __init__(self, url, **options):
        super().__init__(url, **options)
        self._served = {}  # event -> (handler, permission, reply event)
        self._handlers["host.request"] = [self._answer]
        self._unregistered = {}  # handled since the last registration
        self._registering = None  # the task that will register them

    def handle(self, event, permission=None, reply_event=None):
        """Decorator: `handler(data, request)` (sync or async) answers the
        client event `event`; its return value is the reply's data, sent as
        event `reply_event` (default `event`). `request` is the gateway's
        `host.request` data (`client`, `sub`, `permissions`, ...)."""

        def register(handler):
            self._served[event] = (handler, permission, reply_event or event)
            self._unregistered[event] = permission
            if self.connected and self._registering is None:
                self._registering = self._spawn(self._register_later())
            return handler

        return register

    async def registered(self):
        """Waits until the events handled so far are registered (`handle`
        after connecting registers them in the background, in one batch)."""
        if self._registering is not None:
            await self._registering

    async def broadcast(self, event, data=None, room=None):
        message = {"event": event, "data": data}
        if room is not None:
            message["room"] = room
        return await self.request("host.broadcast", message)

    async def send_to(self, client, event, data=None):
        return await self.request("host.send", {"client": client, "event": event, "data": data})

    async def _on_open(self, ws):
        await super()._on_open(ws)
        self._unregistered.clear()
        events = {name: served[1] for name, served in self._served.items()}
        reply = await self._ask(ws, "host.register", {"events": events}, self.timeout)
        log.info("tether: registered as a host on %s: %s", self.url, ", ".join(reply["events"]))

    async def _register_later(self):
        await asyncio.sleep(0)  # the decorators of the same moment in one batch
        try:
            while self._unregistered:
                events, self._unregistered = self._unregistered, {}
                try:
                    await self.request("host.register", {"events": events})
                except TetherError as e:
                    log.error("tether: registering %s failed: %s", ", ".join(events), e)
        finally:
            self._registering = None

    async def _answer(self, request, message):
        if not isinstance(request, dict):
            return
        reply = {"id": request.get("id")}
        event = request.get("event")
        served = self._served.get(event)
        try:
            if served is None:
                raise HostError("unknown_event", "this host does not serve %r" % event)
            handler, _, reply["event"] = served
            reply["data"] = await _call(handler, request.get("data"), request)
        except TetherError as e:
            reply.pop("event", None)
            reply["error"] = {"code": e.code, "message": e.message}
        except Exception:
            log.exception("tether: the handler of %r failed", event)
            reply = _internal_error(reply["id"])
        try:
            await self._send("host.reply", reply)
        except (TypeError, ValueError):
            log.error("tether: the answer to %r is not JSON", event)
            await self._send("host.reply", _internal_error(reply["id"]))
        except ConnectionClosed:
            pass  # the gateway fails the request (host_unavailable) itself


def _internal_error(request_id):
    # The client learns nothing of the host's internals.
    return {"id": request_id, "error": {"code": "internal_error", "message": "the host failed"}}


async def host(url, token=None, **options):
    """A `Host` connected to `url` and registered (with the events handled
    so far; `handle` registers later ones as they come). Options as for
    `tether.connect`."""
    return await Host(url, token=token, **options)._start()
