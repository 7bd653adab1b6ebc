#!/usr/bin/env python3
"""Writes the seed corpus under tests/fuzz/corpus/<target>/ (committed; rerun
after changing the harness input formats in src/proto/fuzzing.rs)."""
import json, os, struct, zlib

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "..", "corpus")

def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# --- handshake: whole request heads.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
def upgrade(target="/", extra=""):
    return (f"GET {target} HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n")
write("handshake", "upgrade", upgrade())
write("handshake", "bearer", upgrade("/ws", "Authorization: Bearer aaa.bbb.ccc\r\nOrigin: http://localhost\r\n"))
write("handshake", "query_token", upgrade("/ws?room=1&token=a%2Eb.c+d"))
write("handshake", "subprotocol", upgrade("/", "Sec-WebSocket-Protocol: tether.v1, tether.bearer.xyz\r\n"))
write("handshake", "with_frame", upgrade() + "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
write("handshake", "plain", "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
write("handshake", "version8", upgrade().replace("Version: 13", "Version: 8"))
write("handshake", "post", upgrade().replace("GET", "POST"))
write("handshake", "partial", upgrade()[:60])
write("handshake", "too_large", upgrade("/", "Cookie: " + "c" * 8300 + "\r\n"))

# --- frames: [config, chunk seed] + stream (raw) or records (config bit 7).
def frame(b0, payload, mask=b"\x37\xfa\x21\x3d"):
    n = len(payload)
    head = bytes([b0])
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xffff:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def record(b0, payload, flags=0):
    return bytes([b0, flags | len(payload)]) + payload

write("frames", "text", bytes([5, 3]) + frame(0x81, b'{"event":"ping"}'))
write("frames", "fragmented", bytes([5, 1]) + frame(0x01, b"Hel") + frame(0x89, b"p")
      + frame(0x00, b"lo ") + frame(0x80, "wörld".encode()) + frame(0x82, b"\x01\x02"))
write("frames", "close", bytes([2, 7]) + frame(0x88, struct.pack(">H", 1000) + b"bye"))
write("frames", "medium", bytes([6, 200]) + frame(0x82, bytes(range(256)) * 2))
write("frames", "too_big", bytes([1, 9]) + frame(0x82, b"x" * 40))
write("frames", "records", bytes([0x85, 4]) + record(0x01, "€".encode()[:1])
      + record(0x80, "€".encode()[1:]) + record(0x89, b"") + record(0x88, b"\x03\xe8ok"))
write("frames", "records_long", bytes([0x86, 33]) + bytes([0x81, 0x40 | 3]) + b"a" * 120)
# Compressed (config bit 6: permessage-deflate negotiated): RFC 7692's
# "Hello", fragmented, on a continuation (1002), and a bomb of zeros (1009).
hello = bytes([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
write("frames", "deflate_hello", bytes([0x45, 3]) + frame(0xc1, hello))
write("frames", "deflate_fragmented", bytes([0x45, 2]) + frame(0x41, hello[:3])
      + frame(0x89, b"") + frame(0x80, hello[3:]))
write("frames", "deflate_rsv1_continuation", bytes([0x45, 2]) + frame(0x01, b"a")
      + frame(0xc0, b"b"))
def deflate(raw):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
write("frames", "deflate_bomb", bytes([0x44, 9]) + frame(0xc2, deflate(bytes(1 << 20))))

# --- dispatch: config byte, then operations (see World::step / World::message).
OPEN, RAW, TEMPLATE, BINARY, TIME, OTHER = 0, 1, 2, 7, 8, 9
def op_open(key, token_choice, ip=0):  # token_choice 5 = no token
    return bytes([OPEN, key, token_choice, ip])
def op_raw(key, text):
    b = text.encode()
    assert len(b) <= 255
    return bytes([RAW, key, len(b)]) + b
def op_template(key, *args):
    return bytes([TEMPLATE, key]) + bytes(args)

ops = b"".join([
    op_open(0, 5), op_raw(0, json.dumps({"event": "auth", "data": {"password": "pw"}, "requestId": 1})),
    op_open(1, 1),  # host token
    op_raw(1, json.dumps({"event": "host.register", "data": {"events": {"move": None, "chat": "publish"}}, "requestId": "r"})),
    op_open(2, 0),  # client token
    op_raw(2, json.dumps({"event": "move", "data": {"x": 1}, "requestId": 7})),
    op_raw(2, json.dumps({"event": "subscribe", "data": {"room": "game_1"}})),
    op_raw(2, json.dumps({"event": "publish", "data": {"room": "lobby", "event": "hi", "data": [1, "two"]}})),
    op_raw(1, json.dumps({"event": "host.reply", "data": {"id": 1, "event": "moved", "data": None}, "requestId": 2})),
    op_raw(1, json.dumps({"event": "host.broadcast", "data": {"event": "tick", "data": 3, "room": "lobby"}})),
    op_raw(1, json.dumps({"event": "host.clients", "requestId": 3})),
    op_raw(1, json.dumps({"event": "host.token", "data": {"sub": "carol", "rooms": ["a"], "ttl": "15m"}, "requestId": 4})),
    bytes([BINARY, 2]),
    bytes([TIME, 0, 0x02 | 0x40]),
    op_raw(2, json.dumps({"event": "move", "requestId": "late"})),
    bytes([OTHER, 1, 1, 0]),  # host disconnects: pending request fails
])
write("dispatch", "session", bytes([0]) + ops)

templates = b"".join([
    op_open(0, 2), op_open(1, 4), op_open(3, 3), op_open(4, 5),
    op_template(1, 7, 2, 0, 1, 1, 1, 0),       # host.register two events
    op_template(0, 14, 0, 0, 0),               # forward "move"
    op_template(1, 8, 0, 0, 0, 0, 0),          # host.reply to the latest request
    op_template(0, 10, 3, 0, 0, 0),            # host.send to key 3
    op_template(0, 12, 3, 1),                  # host.kick key 3
    op_template(0, 13, 0, 1, 2, 1) + bytes(8), # host.token with a numeric ttl
    op_template(4, 1, 0),                      # password auth
    op_template(4, 4, 1),                      # subscribe game_1
    bytes([TIME, 0, 0x03]),                    # three seconds
    bytes([OTHER, 0, 0]),                      # an early timer
])
write("dispatch", "templates", bytes([2 | 4]) + templates)
write("dispatch", "flood", bytes([2]) + op_open(0, 5) + b"".join(op_template(0, 2, 0, 2) for _ in range(16)))

# --- resp: [role bit, chunk seed] + what the broker sends after the connect
# (a command link owes replies to AUTH, SELECT and four GETs; a subscriber to AUTH).
write("resp", "command_replies", b"\x00+OK\r\n+OK\r\n$-1\r\n$3\r\nabc\r\n:7\r\n-ERR x\r\n")
write("resp", "subscriber_pushes", b"\x01+OK\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
      b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nhello\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n")
write("resp", "refused", b"\x00-WRONGPASS invalid username-password pair\r\n")
write("resp", "nested", b"\x02+OK\r\n+OK\r\n*2\r\n*1\r\n:1\r\n*-1\r\n$5\r\nab")
write("resp", "too_large", b"\x01+OK\r\n$9999\r\n")
# The history read script's reply, an XRANGE-shaped reply and an HSCAN page
# (cluster history and presence): nested arrays on the command link.
write("resp", "history_read", b"\x00+OK\r\n+OK\r\n*4\r\n:5\r\n$6\r\n1700-9\r\n:1\r\n"
      b"*2\r\n$13\r\n{\"offset\":4}\r\n$13\r\n{\"offset\":5}\r\n")
write("resp", "xrange", b"\x04+OK\r\n+OK\r\n*2\r\n*2\r\n$3\r\n4-0\r\n*4\r\n$1\r\nm\r\n$2\r\n{}\r\n"
      b"$1\r\nt\r\n$3\r\n170\r\n*2\r\n$3\r\n5-0\r\n*2\r\n$1\r\nm\r\n$-1\r\n")
write("resp", "hscan", b"\x06+OK\r\n+OK\r\n*2\r\n$1\r\n0\r\n*4\r\n$3\r\na.1\r\n$1\r\ns\r\n"
      b"$3\r\na.2\r\n$1\r\nt\r\n-NOSCRIPT No matching script\r\n")
