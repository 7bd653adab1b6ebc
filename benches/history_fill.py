"""Fills 10,000 rooms with 100-byte messages through host.broadcast (10,000
per round, one per room) and prints the gateway's RSS after each round: with
history on it must level off near rooms.history.max_bytes. No subscribers:
the rings alone. Usage: history_fill.py PORT HOST_TOKEN PID ROUNDS
(benches/history.sh runs it)."""
import asyncio, json, sys, websockets
port, token, pid, rounds = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
async def main():
    async with websockets.connect(f"ws://127.0.0.1:{port}/?token={token}", max_size=None) as ws:
        await ws.recv(); await ws.recv()
        await ws.send('{"event":"host.register","data":{"events":{}}}')
        await ws.recv()
        before = rss()
        data = "x" * 100
        for r in range(rounds):
            batch = [json.dumps({"event": "b", "data": data, "room": f"room{i}"}) for i in range(10000)]
            batch = ['{"event":"host.broadcast","data":%s}' % b for b in batch]
            for m in batch:
                await ws.send(m)
            await ws.send('{"event":"ping","requestId":1}')
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("event") == "pong":
                    break
            print(json.dumps({"round": r + 1, "messages": (r + 1) * 10000, "rss_kib": rss()}), flush=True)
        print(json.dumps({"rss_before_kib": before, "rss_after_kib": rss()}))
asyncio.run(main())
