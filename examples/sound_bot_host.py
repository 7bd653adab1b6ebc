#!/usr/bin/env python3
"""A sound bot as a tether host, in Python on the tether library (clients/python).

It serves the client events of a Discord sound bot's WebSocket API -- `list`,
`play`, `random`, `stop`, `status` -- with that API's error codes
(`missing_filename`, `sound_not_found`, `no_voice_channel`, `no_sounds`,
`list_error`, `play_error`, `random_error`, `stop_error`, `status_error`).
The gateway does the rest: sockets, JWT checks, rate limits; the bot only
answers `host.request`s, and the library reconnects (with jittered backoff)
and registers again when the gateway restarts.

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
import logging
import os
import random
import sys
import time

# The library from this checkout (or `pip install clients/python`).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
import tether  # noqa: E402

# Client event -> the event of its answer, as the seed's API names them.
EVENTS = {"list": "list", "play": "playing", "random": "playing", "stop": "stopped", "status": "status"}
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


BotError = tether.HostError  # the client gets an error with its code


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

    # One method per client event: (sub, data) -> the answer's data.

    def on_list(self, sub, data):
        sounds = self.sounds()
        return {"sounds": sounds, "count": len(sounds)}

    def on_play(self, sub, data):
        filename = data.get("filename") if isinstance(data, dict) else None
        if not isinstance(filename, str) or not filename:
            raise BotError("missing_filename", "Filename required for play action")
        if filename not in {s["name"] for s in self.sounds()}:
            raise BotError("sound_not_found", 'Sound "%s" not found' % filename)
        return self.start(filename, sub)

    def on_random(self, sub, data):
        sounds = self.sounds()
        if not sounds:
            raise BotError("no_sounds", "No sound files available")
        answer = self.start(random.choice(sounds)["name"], sub)
        answer["random"] = True
        return answer

    def on_stop(self, sub, data):
        self.now_playing = None
        return {"message": "Audio playback stopped"}

    def on_status(self, sub, data):
        playing = self.playing()
        return {
            "connected": True,
            "playing": playing is not None,
            "now_playing": playing[0] if playing else None,
            "sound_count": len(self.sounds()),
            "server_time": time.time(),
            "channel": self.channel,
        }



def handler(bot, event):
    """The library handler of `event`: the seed's per-action error codes
    (list_error, play_error, ...) for anything unexpected."""
    method = getattr(bot, "on_" + event)

    def handle(data, request):
        try:
            return method(request.get("sub"), data)
        except tether.HostError:
            raise
        except Exception as e:
            print("sound_bot: %s failed: %r" % (event, e), file=sys.stderr)
            raise tether.HostError("%s_error" % event, "Error executing %s" % event)

    return handle


async def serve(args, bot):
    # Reconnects with jittered backoff and registers again by itself.
    host = await tether.host(args.url, token=args.token)
    for event, reply_event in EVENTS.items():
        host.handle(event, permission=args.permission, reply_event=reply_event)(handler(bot, event))
    await host.registered()

    @host.on("host.client_joined")
    def joined(data, message):
        print("client %s (%s) connected" % (data["client"], data["sub"]), flush=True)

    @host.on("host.client_left")
    def left(data, message):
        print("client %s (%s) left" % (data["client"], data["sub"]), flush=True)

    await asyncio.Event().wait()  # serve until interrupted


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
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return asyncio.run(serve(args, bot))
    except tether.TetherError as e:
        print("sound_bot: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
