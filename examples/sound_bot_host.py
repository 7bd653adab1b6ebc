#!/usr/bin/env python3
"""A sound bot as a tether host, in Python with the `websockets` package.

It serves the client events of a Discord sound bot's WebSocket API -- `list`,
`play`, `random`, `stop`, `status` -- with that API's error codes
(`missing_filename`, `sound_not_found`, `no_voice_channel`, `no_sounds`,
`list_error`, `play_error`, `random_error`, `stop_error`, `status_error`).
The gateway does the rest: sockets, JWT checks, rate limits; the bot only
answers `host.request`s.

Playback is simulated: a sound "plays" for a few seconds in the bot's voice
channel. The sounds are the audio files in `--sounds DIR`, or a built-in
list when no directory is given. A client may play sounds only while it is in
a voice channel: by default every client is (in `--channel`); with
`--voice SUB=CHANNEL` (repeatable) only the clients listed are.

    pip install 'websockets>=14'
    TOKEN=$(tether token --sub soundbot --permissions host --ttl 30d)
    python3 examples/sound_bot_host.py --token "$TOKEN"

Options (or environment): --url URL (TETHER_URL, default ws://localhost:8080),
--token JWT (TETHER_HOST_TOKEN, a token with the `host` permission),
--sounds DIR, --channel NAME (default General), --voice SUB=CHANNEL,
--permission P (the permission clients need; default none).
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

EVENTS = ("list", "play", "random", "stop", "status")
AUDIO = (".mp3", ".wav", ".ogg", ".opus", ".flac", ".m4a")
BUILT_IN = (
    "airhorn.mp3",
    "sad_trombone.mp3",
    "rimshot.mp3",
    "applause.mp3",
    "crickets.mp3",
    "wilhelm_scream.mp3",
    "bruh.mp3",
    "tada.mp3",
)


class BotError(Exception):
    """An answer the client gets as an error with `code`."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class SoundBot:
    def __init__(self, sounds_dir, channel, voice):
        self.sounds_dir = sounds_dir
        self.channel = channel
        self.voice = voice  # sub -> channel, or None when everyone is in `channel`
        self.now_playing = None  # (filename, ends_at)

    def sounds(self):
        if self.sounds_dir is None:
            return [{"name": n, "path": "/sounds/" + n} for n in BUILT_IN]
        names = sorted(
            n
            for n in os.listdir(self.sounds_dir)
            if n.lower().endswith(AUDIO)
            and os.path.isfile(os.path.join(self.sounds_dir, n))
        )
        return [
            {"name": n, "path": os.path.abspath(os.path.join(self.sounds_dir, n))}
            for n in names
        ]

    def playing(self):
        if self.now_playing and self.now_playing[1] <= time.monotonic():
            self.now_playing = None
        return self.now_playing

    def voice_channel_of(self, sub):
        if self.voice is None:
            return self.channel
        return self.voice.get(sub)

    def start(self, filename, sub):
        channel = self.voice_channel_of(sub)
        if channel is None:
            raise BotError("no_voice_channel", "User must be in a voice channel")
        # A simulated duration of 2 to 9 seconds, the same for a sound every time.
        seconds = 2 + hashlib.sha1(filename.encode()).digest()[0] % 8
        self.now_playing = (filename, time.monotonic() + seconds)
        self.channel = channel
        return {"filename": filename, "title": filename, "channel": channel}

    # One method per client event: (sub, data) -> (reply event, reply data).

    def on_list(self, sub, data):
        sounds = self.sounds()
        return "list", {"sounds": sounds, "count": len(sounds)}

    def on_play(self, sub, data):
        filename = data.get("filename") if isinstance(data, dict) else None
        if not isinstance(filename, str) or not filename:
            raise BotError("missing_filename", "Filename required for play action")
        if filename not in {s["name"] for s in self.sounds()}:
            raise BotError("sound_not_found", 'Sound "%s" not found' % filename)
        return "playing", self.start(filename, sub)

    def on_random(self, sub, data):
        sounds = self.sounds()
        if not sounds:
            raise BotError("no_sounds", "No sound files available")
        answer = self.start(random.choice(sounds)["name"], sub)
        answer["random"] = True
        return "playing", answer

    def on_stop(self, sub, data):
        self.now_playing = None
        return "stopped", {"message": "Audio playback stopped"}

    def on_status(self, sub, data):
        playing = self.playing()
        return "status", {
            "connected": True,
            "playing": playing is not None,
            "now_playing": playing[0] if playing else None,
            "sound_count": len(self.sounds()),
            "server_time": time.time(),
            "channel": self.channel,
        }

    def answer(self, request):
        """The `host.reply` data for one `host.request`."""
        event = request.get("event")
        reply = {"id": request.get("id")}
        handler = getattr(self, "on_" + event, None) if event in EVENTS else None
        try:
            if handler is None:
                raise BotError("unknown_action", "Unknown action %r" % event)
            reply["event"], reply["data"] = handler(request.get("sub"), request.get("data"))
        except BotError as e:
            reply["error"] = {"code": e.code, "message": e.message}
        except Exception as e:  # the seed's per-action codes: list_error, play_error, ...
            print("sound_bot: %s failed: %r" % (event, e), file=sys.stderr)
            reply["error"] = {"code": "%s_error" % event, "message": "Error executing %s" % event}
        return reply


async def serve(args, bot):
    headers = {"Authorization": "Bearer " + args.token}
    async with connect(args.url, additional_headers=headers) as ws:

        async def send(event, data, request_id=None):
            message = {"event": event, "data": data}
            if request_id is not None:
                message["requestId"] = request_id
            await ws.send(json.dumps(message, separators=(",", ":")))

        events = {name: args.permission for name in EVENTS}
        await send("host.register", {"events": events}, "register")
        async for text in ws:
            message = json.loads(text)
            event, data = message.get("event"), message.get("data")
            if event == "host.request":
                await send("host.reply", bot.answer(data))
            elif event == "host.registered":
                print("registered as a host on %s: %s" % (args.url, ", ".join(data["events"])), flush=True)
            elif event == "host.client_joined":
                print("client %s (%s) connected" % (data["client"], data["sub"]), flush=True)
            elif event == "host.client_left":
                print("client %s (%s) left" % (data["client"], data["sub"]), flush=True)
            elif event == "error":
                print("sound_bot: the gateway refused: %s" % data, file=sys.stderr, flush=True)
                if message.get("requestId") == "register":
                    return 1
    print("sound_bot: the gateway closed the connection", file=sys.stderr)
    return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("TETHER_URL", "ws://localhost:8080"))
    parser.add_argument("--token", default=os.environ.get("TETHER_HOST_TOKEN"))
    parser.add_argument("--sounds", metavar="DIR")
    parser.add_argument("--channel", default="General")
    parser.add_argument("--voice", action="append", metavar="SUB=CHANNEL")
    parser.add_argument("--permission", default=None)
    args = parser.parse_args()
    if not args.token:
        parser.error("no token: pass --token or set TETHER_HOST_TOKEN "
                     "(tether token --sub soundbot --permissions host)")
    if args.sounds is not None and not os.path.isdir(args.sounds):
        parser.error("--sounds %s is not a directory" % args.sounds)
    voice = None
    if args.voice:
        voice = {}
        for item in args.voice:
            sub, sep, channel = item.partition("=")
            if not sep or not sub or not channel:
                parser.error("--voice takes SUB=CHANNEL, got %r" % item)
            voice[sub] = channel
    bot = SoundBot(args.sounds, args.channel, voice)
    try:
        return asyncio.run(serve(args, bot))
    except (OSError, WebSocketException) as e:
        print("sound_bot: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
