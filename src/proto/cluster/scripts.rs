//! The Lua scripts that keep a room's history in Redis (SPEC §10), run with
//! EVALSHA once SCRIPT LOAD answered (EVAL before that and on NOSCRIPT).
//! Each runs atomically: offset, epoch, stream and publish never disagree.
//!
//! Keys: `{prefix}:hist:{room}` a hash (`o` last offset, `e` epoch) and
//! `{prefix}:stream:{room}` a stream whose entry ids are `{offset}-0`, each
//! with `m` (the message as members get it, offset included), `t` (Redis
//! time in ms, for `ttl_s`), `k` (`p` publish or `b` broadcast) and `s` (the
//! sender's client id or `-`), so that a gap is filled as the live path delivers.

/// Both scripts begin here: `now` (Redis time in ms), and the room's
/// `epoch` and last offset `off`, made (and the stream emptied) when the
/// room has none.
macro_rules! room_epoch {
    () => {
        r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local epoch = redis.call('HGET', KEYS[1], 'e')
local off = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if not epoch then
  epoch = t[1] .. '-' .. t[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  off = 0
end
"#
    };
}

/// KEYS: meta, stream. ARGV: 1 the message JSON without offset (ends in
/// `}`), 2 size, 3 ttl_s, 4 the meta key's ttl_s, 5 the room channel, 6 the
/// envelope head, 7 the sender's client id or `-`, 8 the kind (`p`/`b`).
/// Publishes the head, then
/// `{offset} {epoch} {sender}\n{message}`; returns the offset.
pub const PUBLISH: &str = concat!(
    room_epoch!(),
    r#"
off = redis.call('HINCRBY', KEYS[1], 'o', 1)
local msg = string.sub(ARGV[1], 1, -2) .. ',"offset":' .. off .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], off .. '-0', 'm', msg, 't', now, 'k', ARGV[8], 's', ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6] .. off .. ' ' .. epoch .. ' ' .. ARGV[7] .. '\n' .. msg)
return off
"#
);

/// KEYS: meta, stream. ARGV: 1 mode (`p` position, `s` since, `g` since for
/// a gap: each message headed `{kind} {sender}\n`, `r` recent),
/// 2 since offset, 3 since epoch, 4 most messages, 5 size, 6 ttl in ms,
/// 7 most bytes of messages, 8 the meta key's ttl_s. Returns `{offset,
/// epoch, complete, {message...}}`: the newest messages that fit, oldest
/// first; `complete` is 1 when every message after `since` is among them.
pub const READ: &str = concat!(
    room_epoch!(),
    r#"
redis.call('EXPIRE', KEYS[1], ARGV[8])
local mode = ARGV[1]
if mode == 'p' then return {off, epoch, 1, {}} end
local want
if mode == 's' or mode == 'g' then
  local since = tonumber(ARGV[2])
  if epoch ~= ARGV[3] or since > off then return {off, epoch, 0, {}} end
  want = off - since
else
  want = math.min(tonumber(ARGV[4]), off)
end
if want <= 0 then return {off, epoch, 1, {}} end
local oldest = math.max(off - want + 1, off - tonumber(ARGV[5]) + 1, off - tonumber(ARGV[4]) + 1)
local ttl = tonumber(ARGV[6])
local budget = tonumber(ARGV[7])
local entries = redis.call('XREVRANGE', KEYS[2], off .. '-0', oldest .. '-0')
local out = {}
local bytes = 0
for i = 1, #entries do
  local f = entries[i][2]
  local msg, at = f[2], tonumber(f[4])
  if mode == 'g' then msg = (f[6] or 'p') .. ' ' .. (f[8] or '-') .. '\n' .. msg end
  if at + ttl <= now then break end
  bytes = bytes + #msg
  if bytes > budget then break end
  out[#out + 1] = msg
end
local n = #out
for i = 1, math.floor(n / 2) do out[i], out[n - i + 1] = out[n - i + 1], out[i] end
local complete = 0
if n == want then complete = 1 end
return {off, epoch, complete, out}
"#
);

/// KEYS: the set of a node's presence rooms. ARGV: 1 `{prefix}:presence:`,
/// 2 the node. Removes the node's hash of every room in the set, and the set.
pub const PRESENCE_RESET: &str = r#"
local rooms = redis.call('SMEMBERS', KEYS[1])
for i = 1, #rooms do redis.call('DEL', ARGV[1] .. rooms[i] .. ':' .. ARGV[2]) end
redis.call('DEL', KEYS[1])
return #rooms
"#;

/// KEYS: meta. A room whose history misses messages (delivered while the
/// broker was down) gets a new epoch, so recoveries from the old one fail;
/// a room with none has nothing to renew. Returns 1 when renewed.
pub const RENEW_EPOCH: &str = r#"
local old = redis.call('HGET', KEYS[1], 'e')
if not old then return 0 end
local t = redis.call('TIME')
local epoch = t[1] .. '-' .. t[2]
if epoch == old then epoch = epoch .. 'r' end
redis.call('HSET', KEYS[1], 'e', epoch)
return 1
"#;
