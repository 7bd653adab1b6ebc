"""tether: asyncio clients and hosts for the tether WebSocket gateway.

    client = await tether.connect("ws://localhost:8080", token=JWT)
    host = await tether.host("ws://localhost:8080", token=HOST_JWT)
"""

from .client import Backoff, Client, TetherError, connect
from .host import Host, HostError, host

__all__ = ["Backoff", "Client", "Host", "HostError", "TetherError", "connect", "host"]
__version__ = "0.1.0"
