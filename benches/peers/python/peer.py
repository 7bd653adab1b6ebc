"""Bench peer: Python `websockets` (asyncio server, compression=None).

Paths: /pub broadcasts each message to every /sub connection (with
websockets.broadcast); any other path echoes. Usage: python3 peer.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

SUBS = set()


async def handler(ws):
    path = ws.request.path.split("?")[0]
    if path == "/pub":
        async for msg in ws:
            broadcast(SUBS, msg)
    elif path == "/sub":
        SUBS.add(ws)
        try:
            await ws.wait_closed()
        finally:
            SUBS.discard(ws)
    else:
        async for msg in ws:
            await ws.send(msg)


async def main(port):
    async with serve(handler, "127.0.0.1", port, compression=None,
                     max_size=16 * 1024 * 1024, ping_interval=None,
                     max_queue=None):
        print(f"websockets peer on 127.0.0.1:{port}", file=sys.stderr)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9005))
