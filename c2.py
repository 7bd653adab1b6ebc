import asyncio, websockets, collections
async def one(c):
    try:
        b = await websockets.connect("ws://127.0.0.1:18931/", open_timeout=5)
        c["accepted"] += 1
    except websockets.exceptions.InvalidStatus as e:
        c["status %d %s" % (e.response.status_code, e.response.headers.get("Retry-After"))] += 1
    except Exception as e:
        c["other %s %s" % (type(e).__name__, e)] += 1
async def main():
    a = await websockets.connect("ws://127.0.0.1:18931/")
    c = collections.Counter()
    await asyncio.gather(*[one(c) for i in range(300)])
    print(c)
asyncio.run(main())
