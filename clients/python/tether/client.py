"""A tether client: connect with a token, handle events, request/reply with
timeouts, rooms; reconnects with full-jitter backoff and re-subscribes."""

import asyncio
import inspect
import itertools
import json
import logging
import random

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

log = logging.getLogger("tether")

# Refusals that another attempt with the same credentials cannot fix.
FATAL_STATUS = (401, 403)
FATAL_CODES = ("auth_failed", "forbidden")


class TetherError(Exception):
    """An error reply (or a local failure: `timeout`, `disconnected`,
    `closed`, `connect_failed`); `code` says which."""

    def __init__(self, code, message="", data=None):
        super().__init__("%s: %s" % (code, message) if message else code)
        self.code = code
        self.message = message
        self.data = data


class Backoff:
    """Full-jitter exponential backoff: a random pause in [0, min(ceiling,
    base * 2**attempt)], so that many clients do not come back in step."""

    def __init__(self, base=0.5, ceiling=30.0):
        self.base = base
        self.ceiling = ceiling
        self.attempt = 0

    def next_delay(self):
        bound = min(self.ceiling, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(0, bound)

    def reset(self):
        self.attempt = 0


async def _call(handler, *args):
    result = handler(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Client:
    """Use `await tether.connect(url, token=...)` rather than this directly."""

    def __init__(self, url, token=None, password=None, auth="subprotocol",
                 timeout=10.0, backoff=None, open_timeout=10.0):
        if auth not in ("subprotocol", "header", "event"):
            raise ValueError("auth is 'subprotocol', 'header' or 'event'")
        self.url = url
        self.token = token  # a string, or a (possibly async) function giving one
        self.password = password
        self.auth = auth
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.session = None  # the last `authenticated` data
        self._handlers = {}
        self._pending = {}
        self._rooms = set()
        self._ids = itertools.count(1)
        self._ws = None
        self._ready = asyncio.Event()
        self._closing = False
        self._runner = None
        self._tasks = set()

    # -- the public shape ----------------------------------------------------

    def on(self, event):
        """Decorator: `handler(data, message)` (sync or async) for each
        `event` that is not a reply; `authenticated` fires on every
        (re)connection."""

        def register(handler):
            self._handlers.setdefault(event, []).append(handler)
            return handler

        return register

    async def request(self, event, data=None, timeout=None):
        """Sends `event` and resolves with the reply's data; raises
        `TetherError` on an error reply or when no reply came in time
        (waiting for a reconnection counts toward `timeout`)."""
        if self._closing:
            raise TetherError("closed", "the client was closed")
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise TetherError("timeout", "not connected within %ss" % timeout) from None
        return await self._ask(self._ws, event, data, max(0.0, deadline - loop.time()))

    async def subscribe(self, room):
        reply = await self.request("subscribe", {"room": room})
        self._rooms.add(room)
        return reply

    async def unsubscribe(self, room):
        self._rooms.discard(room)
        return await self.request("unsubscribe", {"room": room})

    async def publish(self, room, event, data=None):
        return await self.request("publish", {"room": room, "event": event, "data": data})

    async def close(self):
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_pending("closed", "the client was closed")

    @property
    def connected(self):
        return self._ready.is_set()

    # -- connecting ----------------------------------------------------------

    async def _start(self):
        """Runs the connection loop; returns once the first connection is
        ready, or raises what stopped it."""
        first = asyncio.get_running_loop().create_future()
        self._runner = asyncio.ensure_future(self._run(first))
        try:
            await first
        except BaseException:
            self._closing = True
            self._runner.cancel()
            raise
        return self

    async def _token(self):
        token = self.token
        return await _call(token) if callable(token) else token

    async def _open(self):
        """A WebSocket past `connected`, authenticated: (ws, authenticated data)."""
        token = await self._token()
        options = {"open_timeout": self.open_timeout, "max_size": None}
        if token and self.auth == "subprotocol":
            options["subprotocols"] = ["tether.v1", "tether.bearer." + token]
        elif token and self.auth == "header":
            options["additional_headers"] = {"Authorization": "Bearer " + token}
        ws = await ws_connect(self.url, **options)
        try:
            connected = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
            if not isinstance(connected, dict) or connected.get("event") != "connected":
                raise TetherError("connect_failed", "no `connected` message")
            if (connected.get("data") or {}).get("authenticated"):
                first = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
            else:
                credentials = {"token": token} if token else {"password": self.password}
                first = await self._exchange(ws, "auth", credentials)
            if not isinstance(first, dict):
                raise TetherError("connect_failed", "the gateway sent %r" % first)
            if first.get("event") == "error":
                error = first.get("data") or {}
                raise TetherError(error.get("code", "auth_failed"), error.get("message", ""))
            if first.get("event") != "authenticated":
                raise TetherError("connect_failed", "expected `authenticated`, got %r" % first.get("event"))
            return ws, first
        except BaseException:
            await ws.close()
            raise

    async def _exchange(self, ws, event, data):
        """One request read inline, before the reader runs (the `auth` step)."""
        await ws.send(json.dumps({"event": event, "data": data, "requestId": "auth"}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
            if isinstance(message, dict) and message.get("requestId") == "auth":
                return message

    async def _run(self, first):
        while not self._closing:
            try:
                ws, authenticated = await self._open()
            except Exception as e:
                if not first.done():
                    first.set_exception(_as_error(e))
                    return
                if _is_fatal(e):
                    log.error("tether: %s refuses the credentials: %s", self.url, e)
                else:
                    log.info("tether: cannot reach %s: %s", self.url, e)
                await asyncio.sleep(self._pause(e))
                continue
            try:
                await self._session(ws, authenticated, first)
            except Exception as e:  # a step of on_open failed: try again later
                if not first.done():
                    first.set_exception(_as_error(e))
                    return
                log.warning("tether: session on %s ended: %s", self.url, e)
            if not self._closing:
                log.info("tether: connection to %s lost; reconnecting", self.url)
                await asyncio.sleep(self.backoff.next_delay())

    def _pause(self, error):
        delay = self.backoff.next_delay()
        # A 429 or 503 says when to come back.
        if isinstance(error, InvalidStatus):
            retry_after = error.response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                delay = max(delay, float(retry_after))
        return delay

    async def _session(self, ws, authenticated, first):
        self._ws = ws
        self.session = authenticated.get("data")
        reader = asyncio.ensure_future(self._read(ws))
        try:
            opening = asyncio.ensure_future(self._on_open(ws))
            await asyncio.wait([opening, reader], return_when=asyncio.FIRST_COMPLETED)
            if not opening.done():
                opening.cancel()
                raise TetherError("disconnected", "the connection closed while opening")
            opening.result()
            self._ready.set()
            self.backoff.reset()
            if not first.done():
                first.set_result(None)
            self._dispatch(authenticated)
            await reader
        finally:
            self._ready.clear()
            self._ws = None
            reader.cancel()
            await ws.close()
            self._fail_pending("disconnected", "the connection to the gateway was lost")

    async def _on_open(self, ws):
        """After each authentication: back into the rooms subscribed so far."""
        for room in sorted(self._rooms):
            try:
                await self._ask(ws, "subscribe", {"room": room}, self.timeout)
            except TetherError as e:
                if e.code not in ("room_not_allowed", "forbidden"):
                    raise
                # The new token no longer allows it: leave it, keep the rest.
                log.warning("tether: cannot subscribe again to %r: %s", room, e)
                self._rooms.discard(room)

    # -- messages ------------------------------------------------------------

    async def _ask(self, ws, event, data, timeout):
        request_id = next(self._ids)
        reply = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        try:
            await ws.send(json.dumps({"event": event, "data": data, "requestId": request_id}))
            message = await asyncio.wait_for(reply, timeout)
        except asyncio.TimeoutError:
            raise TetherError("timeout", "no reply to %s within %ss" % (event, timeout)) from None
        except ConnectionClosed:
            raise TetherError("disconnected", "the connection to the gateway was lost") from None
        finally:
            self._pending.pop(request_id, None)
        if message.get("event") == "error":
            error = message.get("data") or {}
            raise TetherError(error.get("code", "error"), error.get("message", ""), error)
        return message.get("data")

    async def _send(self, event, data):
        """Sends without waiting for a reply (host replies)."""
        ws = self._ws
        if ws is not None:
            await ws.send(json.dumps({"event": event, "data": data}))

    async def _read(self, ws):
        try:
            async for text in ws:
                try:
                    message = json.loads(text)
                except ValueError:
                    log.warning("tether: the gateway sent non-JSON text")
                    continue
                if not isinstance(message, dict):
                    continue
                if "requestId" not in message:
                    self._dispatch(message)
                    continue
                request_id = message["requestId"]
                reply = self._pending.get(request_id) if type(request_id) is int else None
                if reply is not None and not reply.done():
                    reply.set_result(message)
                else:  # only our requests carry one: a reply after its timeout
                    log.debug("tether: a late reply to request %r", request_id)
        except ConnectionClosed:
            pass

    def _dispatch(self, message):
        handlers = self._handlers.get(message.get("event"), ())
        if not handlers and message.get("event") == "error":
            log.warning("tether: the gateway reports %s", message.get("data"))
        for handler in handlers:
            self._spawn(self._run_handler(handler, message))

    def _spawn(self, coroutine):
        # Kept until done so that a handler task is never collected mid-run.
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_handler(self, handler, message):
        try:
            await _call(handler, message.get("data"), message)
        except Exception:
            log.exception("tether: the handler of %r failed", message.get("event"))

    def _fail_pending(self, code, text):
        for reply in list(self._pending.values()):
            if not reply.done():
                reply.set_exception(TetherError(code, text))
        self._pending.clear()


def _is_fatal(error):
    if isinstance(error, InvalidStatus):
        return error.response.status_code in FATAL_STATUS
    return isinstance(error, TetherError) and error.code in FATAL_CODES


def _as_error(error):
    if isinstance(error, TetherError):
        return error
    if isinstance(error, InvalidStatus):
        return TetherError("connect_failed", "HTTP %d" % error.response.status_code)
    return TetherError("connect_failed", str(error) or type(error).__name__)


async def connect(url, token=None, **options):
    """A `Client` connected and authenticated to `url` (ws:// or wss://).

    `token` (a JWT, or a function returning one, called on every
    connection) goes in the subprotocol list (`auth="subprotocol"`, the
    default), an Authorization header (`auth="header"`) or an `auth` event
    (`auth="event"`, also used with `password=`). Options: `timeout` (default
    of `request`, seconds), `backoff` (a `Backoff(base, ceiling)`).
    """
    return await Client(url, token=token, **options)._start()
