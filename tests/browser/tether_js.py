"""tether.js in Chromium (run by tests/browser.rs): a page the gateway serves
imports /tether.js and connects, requests, subscribes, recovers after a
gateway restart and refreshes its token. Prints `ok NAME` per check."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Browser, control, fail  # noqa: E402

URL = os.environ["TETHER_URL"]  # ws://127.0.0.1:PORT/
PAGE = os.environ["TETHER_PAGE"]  # a page on the health listener
TOKENS = json.loads(os.environ["TETHER_TOKENS"])

# Runs in the page: the library, and a few helpers the steps share.
SETUP = """async ({url, tokens}) => {
  const tether = await import('/tether.js');
  const options = {backoff: {base: 100, ceiling: 1000}, timeout: 5000};
  const open = (token, extra) => tether.connect(url, {token, ...options, ...extra});
  const next = (client, event, ms = 5000) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no ' + event + ' within ' + ms + ' ms')), ms);
    const off = client.on(event, (data) => { clearTimeout(timer); off(); resolve(data); });
  });
  window.t = {tether, open, next, url, tokens};
  return typeof tether.connect;
}"""


def step(opened, name, script, arg=None):
    try:
        result = opened.page.evaluate(script, arg)
    except Exception as e:  # the page's own error, one line
        opened.screenshot(name)
        fail("%s failed: %s" % (name, str(e).splitlines()[0]))
    print("ok %s" % name, flush=True)
    return result


def main():
    with Browser() as browser:
        opened = browser.open(PAGE, TOKENS["alice"], bypass_csp=True, name="tether-js")
        if step(opened, "import", SETUP, {"url": URL, "tokens": TOKENS}) != "function":
            fail("tether.js exports no connect")
        step(opened, "connect", """async () => {
          window.alice = await t.open(sessionStorage.getItem('tether.token'));
          if (alice.session.sub !== 'alice') throw new Error('sub ' + alice.session.sub);
        }""")
        step(opened, "request", """async () => {
          const me = await alice.request('whoami');
          if (me.sub !== 'alice') throw new Error('whoami ' + JSON.stringify(me));
          const code = await alice.request('no.such.event').then(() => 'none', (e) => e.code);
          if (code !== 'unknown_event') throw new Error('code ' + code);
        }""")
        step(opened, "subscribe", """async () => {
          window.bob = await t.open(t.tokens.bob);
          const sub = await alice.subscribe('chat_1');
          if (sub.room !== 'chat_1' || typeof sub.epoch !== 'string') throw new Error(JSON.stringify(sub));
          const got = t.next(alice, 'said');
          const published = await bob.publish('chat_1', 'said', {text: '<b>hi</b>'});
          if (published.delivered !== 1) throw new Error(JSON.stringify(published));
          const data = await got;
          if (data.text !== '<b>hi</b>') throw new Error(JSON.stringify(data));
        }""")
        step(opened, "reconnect_recovers", """async () => {
          const missed = [];
          alice.on('said', (data) => missed.push(data.n));
          const back = t.next(alice, 'resubscribed');
          alice.reconnect();
          await bob.publish('chat_1', 'said', {n: 1});
          await bob.publish('chat_1', 'said', {n: 2});
          const again = await back;
          if (!again.recovered) throw new Error(JSON.stringify(again));
          const deadline = Date.now() + 3000;
          while (missed.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
          if (JSON.stringify(missed) !== '[1,2]') throw new Error('missed ' + JSON.stringify(missed));
        }""")
        # Chromium logs each reconnect attempt refused while the gateway is
        # down, or timed out while it is frozen.
        opened.allow(r"^console: WebSocket connection to 'ws://127\.0\.0\.1:\d+/' failed")
        opened.page.evaluate("""() => {
          window.back = t.next(alice, 'resubscribed', 20000);
          window.bobBack = t.next(bob, 'authenticated', 20000);
        }""")
        if control("restart") != "restarted":
            fail("the gateway did not restart")
        step(opened, "recovery_after_restart", """async () => {
          const again = await back;
          if (again.recovered !== false) throw new Error(JSON.stringify(again));
          await bobBack;
          const got = t.next(alice, 'said');
          await bob.publish('chat_1', 'said', {n: 3});
          if ((await got).n !== 3) throw new Error('no message after the restart');
        }""")
        step(opened, "token_refresh", """async (token) => {
          let asked = 0;
          const short = await t.open(token, {
            refreshToken: () => { asked += 1; return t.tokens.fresh; },
          });
          const id = short.session.clientId;
          const refreshed = await t.next(short, 'refreshed', 8000);
          if (!(refreshed.expiresAt > Date.now() / 1000 + 60)) throw new Error(JSON.stringify(refreshed));
          await new Promise((r) => setTimeout(r, 3500)); // past the first token's expiry
          const me = await short.request('whoami');
          if (asked !== 1 || short.session.clientId !== id || me.clientId !== id) {
            throw new Error('asked ' + asked + ', ' + id + ' -> ' + me.clientId);
          }
          short.close();
        }""", control("short token"))
        # Browsers hide the gateway's pings: the library's own `ping` probe
        # goes unanswered while the gateway is frozen.
        opened.page.evaluate("""async () => {
          window.watched = await t.open(t.tokens.alice, {pingInterval: 1000, pingTimeout: 1000, openTimeout: 1000});
          window.lost = t.next(watched, 'disconnected', 10000);
          lost.catch(() => {});
        }""")
        if control("freeze") != "frozen":
            fail("the gateway was not frozen")
        try:
            dead = opened.page.evaluate("async () => (await lost).code")
        finally:
            control("thaw")
        if dead != 4000:
            fail("dead_peer: disconnected with %r, not 4000" % dead)
        step(opened, "dead_peer", """async () => {
          await t.next(watched, 'authenticated', 15000);
          if ((await watched.request('whoami')).sub !== 'alice') throw new Error('whoami');
          watched.close();
        }""")
        opened.page.evaluate("() => { alice.close(); bob.close(); }")
        opened.screenshot("done")
        if opened.errors:
            fail("errors in the page: %s" % "; ".join(opened.errors))
        foreign = opened.foreign_requests(allowed_origins=[URL.rstrip("/").replace("ws://", "http://")])
        if foreign:
            fail("requests outside the gateway: %s" % foreign)
        print("ok clean", flush=True)


if __name__ == "__main__":
    main()
