//! A simulated game server as a tether host: the events and permissions of a
//! FiveM `[websocket]` resource (`getPlayers`, `getStats`, `getJobs`,
//! `kickPlayer`, `announce`), answered from a simulated player list, and the
//! broadcasts `playerJoined` / `playerLeft` / `characterSelected` /
//! `playerKicked` as simulated players come and go.
//!
//! Run it against a local gateway (see the README's quick start):
//!
//! ```sh
//! cargo run --release                      # the gateway, in another terminal
//! TOKEN=$(cargo run -q --release -- token --sub game --permissions host --ttl 30d)
//! cargo run --example game_host -- --token "$TOKEN"
//! ```
//!
//! Options (or environment): `--url URL` (`TETHER_URL`, default
//! `ws://localhost:8080`), `--token JWT` (`TETHER_HOST_TOKEN`, required: a token
//! with the `host` permission, from `tether token`), `--interval-ms N` (time
//! between simulated game events, default 3000), `--seed N` (the simulation's
//! random seed, default from the clock).
//!
//! Plain blocking code: one socket, a short read timeout, and the simulation
//! ticking whenever a read times out. When the gateway goes away (a restart,
//! a network failure) it reconnects after a jittered, growing pause and
//! registers again; it exits only when the gateway refuses its token.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const MAX_PLAYERS: usize = 64;

/// The client events this host serves, with the permission each needs.
const EVENTS: [(&str, &str); 5] = [
    ("getPlayers", "players.view"),
    ("getStats", "stats.view"),
    ("getJobs", "jobs.view"),
    ("kickPlayer", "players.kick"),
    ("announce", "announce"),
];

const NAMES: [&str; 12] = [
    "Ann", "Bo", "Cyd", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu",
];
const SURNAMES: [&str; 6] = ["Doe", "Roe", "Poe", "Moe", "Loe", "Zoe"];
/// (name, label, grade names).
const JOBS: [(&str, &str, &[&str]); 4] = [
    (
        "police",
        "Los Santos Police Department",
        &["Cadet", "Officer", "Sergeant"],
    ),
    ("ambulance", "EMS", &["Trainee", "Paramedic", "Doctor"]),
    ("mechanic", "Bennys Motorworks", &["Apprentice", "Mechanic"]),
    ("unemployed", "Civilian", &["Unemployed"]),
];

struct Options {
    url: String,
    token: String,
    interval: Duration,
    seed: u64,
}

fn usage() -> &'static str {
    "usage: game_host [--url ws://HOST:PORT] --token JWT [--interval-ms N] [--seed N]\n\
     (or TETHER_URL, TETHER_HOST_TOKEN); mint a token with\n\
     `tether token --sub game --permissions host --ttl 30d`"
}

fn options() -> Result<Options, String> {
    let mut url = std::env::var("TETHER_URL").unwrap_or_else(|_| "ws://localhost:8080".into());
    let mut token = std::env::var("TETHER_HOST_TOKEN").ok();
    let mut interval_ms: u64 = 3000;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => url = value()?,
            "--token" => token = Some(value()?),
            "--interval-ms" => {
                interval_ms = value()?
                    .parse()
                    .map_err(|_| "--interval-ms takes milliseconds".to_string())?
            }
            "--seed" => {
                seed = value()?
                    .parse()
                    .map_err(|_| "--seed takes a number".to_string())?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let token = token.ok_or("no token: pass --token or set TETHER_HOST_TOKEN")?;
    Ok(Options {
        url,
        token,
        interval: Duration::from_millis(interval_ms.max(1)),
        seed: seed.max(1),
    })
}

/// xorshift64: enough randomness for a simulation, no dependency.
struct Rng(u64);

impl Rng {
    /// Spreads a seed (splitmix64) so that near seeds start far apart.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

struct Character {
    id: u64,
    name: String,
    job: usize,
    cash: u64,
    bank: u64,
}

struct Player {
    source: u64,
    name: String,
    license: String,
    discord: String,
    character: Option<Character>,
}

struct Game {
    players: Vec<Player>,
    next_source: u64,
    next_character: u64,
    started: Instant,
    rng: Rng,
}

impl Game {
    fn player_json(p: &Player) -> Value {
        json!({
            "source": p.source,
            "name": p.name,
            "identifiers": {"license": p.license, "discord": p.discord},
            "character": p.character.as_ref().map(|c| json!({
                "id": c.id,
                "name": c.name,
                "job": JOBS[c.job].1,
                "cash": c.cash,
                "bank": c.bank,
            })),
        })
    }

    /// Answers one client request: `Ok((event, data))` or `Err((code, message))`,
    /// plus any broadcasts it causes.
    fn handle(
        &mut self,
        event: &str,
        data: &Value,
        broadcasts: &mut Vec<(&'static str, Value)>,
    ) -> Result<(&'static str, Value), (&'static str, String)> {
        match event {
            "getPlayers" => {
                let players: Vec<Value> = self.players.iter().map(Self::player_json).collect();
                Ok(("players", json!({ "players": players })))
            }
            "getStats" => Ok((
                "stats",
                json!({
                    "onlinePlayers": self.players.len(),
                    "maxPlayers": MAX_PLAYERS,
                    "uptime": self.started.elapsed().as_secs(),
                }),
            )),
            "getJobs" => {
                let jobs: Vec<Value> = JOBS
                    .iter()
                    .map(|(name, label, grades)| {
                        let grades: Vec<Value> = grades
                            .iter()
                            .enumerate()
                            .map(|(g, grade)| json!({"grade": g, "name": grade, "salary": 50 + 25 * g}))
                            .collect();
                        json!({"name": name, "label": label, "grades": grades})
                    })
                    .collect();
                Ok(("jobs", json!({ "jobs": jobs })))
            }
            "kickPlayer" => {
                let Some(source) = data.get("source").and_then(Value::as_u64) else {
                    return Err((
                        "invalid_data",
                        "kickPlayer needs {\"source\": N, \"reason\": TEXT}".into(),
                    ));
                };
                let reason = data
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("Kicked by an admin")
                    .to_string();
                let Some(at) = self.players.iter().position(|p| p.source == source) else {
                    return Err(("player_not_found", format!("no player {source} online")));
                };
                let player = self.players.remove(at);
                println!("kicked {} ({source}): {reason}", player.name);
                broadcasts.push(("playerKicked", json!({"source": source, "reason": reason})));
                broadcasts.push((
                    "playerLeft",
                    json!({"source": source, "name": player.name, "reason": "Kicked"}),
                ));
                Ok((
                    "success",
                    json!({ "message": format!("Player {source} kicked") }),
                ))
            }
            "announce" => {
                let Some(message) = data.get("message").and_then(Value::as_str) else {
                    return Err((
                        "invalid_data",
                        "announce needs {\"message\": TEXT, \"type\": TEXT}".into(),
                    ));
                };
                let kind = data.get("type").and_then(Value::as_str).unwrap_or("info");
                println!(
                    "announcement to {} players [{kind}]: {message}",
                    self.players.len()
                );
                Ok(("success", json!({"message": "Announcement sent"})))
            }
            _ => Err(("unknown_event", format!("this host does not serve {event}"))),
        }
    }

    /// One simulated game event: someone joins, picks a character, or leaves.
    fn tick(&mut self) -> Option<(&'static str, Value)> {
        let roll = self.rng.below(10);
        let without_character: Vec<usize> = (0..self.players.len())
            .filter(|&i| self.players[i].character.is_none())
            .collect();
        if self.players.is_empty() || (roll < 5 && self.players.len() < MAX_PLAYERS) {
            self.next_source += 1;
            let source = self.next_source;
            let name = format!(
                "{}{}",
                NAMES[self.rng.below(NAMES.len())],
                self.rng.below(100)
            );
            let license = format!("license:{:016x}", self.rng.next());
            let discord = format!("discord:{}", self.rng.next() % 1_000_000_000_000);
            let data = json!({"source": source, "name": name, "license": license});
            println!("{name} ({source}) joined");
            self.players.push(Player {
                source,
                name,
                license,
                discord,
                character: None,
            });
            Some(("playerJoined", data))
        } else if roll < 8 && !without_character.is_empty() {
            let i = without_character[self.rng.below(without_character.len())];
            self.next_character += 1;
            let name = format!(
                "{} {}",
                NAMES[self.rng.below(NAMES.len())],
                SURNAMES[self.rng.below(SURNAMES.len())]
            );
            let character = Character {
                id: self.next_character,
                name: name.clone(),
                job: self.rng.below(JOBS.len()),
                cash: 100 * self.rng.below(100) as u64,
                bank: 1000 * self.rng.below(100) as u64,
            };
            let player = &mut self.players[i];
            println!("{} ({}) plays {name}", player.name, player.source);
            let data = json!({"source": player.source, "characterId": character.id, "name": name});
            player.character = Some(character);
            Some(("characterSelected", data))
        } else {
            let player = self.players.remove(self.rng.below(self.players.len()));
            println!("{} ({}) left", player.name, player.source);
            Some((
                "playerLeft",
                json!({"source": player.source, "name": player.name, "reason": "Disconnected"}),
            ))
        }
    }
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn send(ws: &mut Ws, message: Value) -> Result<(), String> {
    ws.send(Message::text(message.to_string()))
        .map_err(|e| format!("send failed: {e}"))
}

/// The next text message as JSON; `Ok(None)` when the read timed out.
fn read(ws: &mut Ws) -> Result<Option<Value>, String> {
    match ws.read() {
        Ok(Message::Text(text)) => serde_json::from_str(text.as_str())
            .map(Some)
            .map_err(|e| format!("the gateway sent non-JSON text: {e}")),
        Ok(Message::Close(frame)) => Err(format!("the gateway closed the connection: {frame:?}")),
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("connection lost: {e}")),
    }
}

/// Reads until `event` arrives (the connection's first messages).
fn expect(ws: &mut Ws, event: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(message) = read(ws)? {
            if message["event"] == event {
                return Ok(message);
            }
            if message["event"] == "error" {
                return Err(format!("the gateway refused: {}", message["data"]));
            }
        }
    }
    Err(format!("no {event} from the gateway within 10 s"))
}

/// Why a connection ended or could not be made.
enum Lost {
    /// The gateway refused the token (401/403): another try cannot help.
    Refused(String),
    /// Anything else (the gateway restarting, a network failure): try again.
    Retry(String),
}

impl From<String> for Lost {
    fn from(problem: String) -> Lost {
        Lost::Retry(problem)
    }
}

fn connect(options: &Options) -> Result<Ws, Lost> {
    let mut request = options
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| Lost::Refused(format!("bad URL {:?}: {e}", options.url)))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", options.token))
        .map_err(|_| Lost::Refused("the token is not a valid header value".into()))?;
    request.headers_mut().insert("Authorization", bearer);
    let (mut ws, _) = tungstenite::connect(request).map_err(|e| match &e {
        tungstenite::Error::Http(response) if matches!(response.status().as_u16(), 401 | 403) => {
            Lost::Refused(format!("{} refused the token: {e}", options.url))
        }
        _ => Lost::Retry(format!("cannot connect to {}: {e}", options.url)),
    })?;
    if let MaybeTlsStream::Plain(stream) = ws.get_mut() {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
    }
    expect(&mut ws, "authenticated")?;
    let events: serde_json::Map<String, Value> = EVENTS
        .iter()
        .map(|(name, permission)| (name.to_string(), json!(permission)))
        .collect();
    send(
        &mut ws,
        json!({"event": "host.register", "data": {"events": events}, "requestId": "register"}),
    )?;
    let registered = expect(&mut ws, "host.registered")?;
    println!(
        "registered as a host on {}: {}",
        options.url, registered["data"]["events"]
    );
    Ok(ws)
}

/// Full-jitter exponential backoff: a random pause up to a bound that
/// doubles from `BASE` to `CEILING`, so that hosts do not return in step.
struct Backoff {
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(250);
    const CEILING: Duration = Duration::from_secs(30);

    fn next_pause(&mut self) -> Duration {
        let bound = Self::BASE
            .saturating_mul(1 << self.attempt.min(16))
            .min(Self::CEILING);
        self.attempt += 1;
        Duration::from_millis(self.rng.below(bound.as_millis() as usize + 1) as u64)
    }
}

/// Connects, registers and serves until the connection ends; then again,
/// after a pause, for as long as the gateway accepts the token.
fn run(options: Options) -> Result<(), String> {
    let mut game = Game {
        players: Vec::new(),
        next_source: 0,
        next_character: 0,
        started: Instant::now(),
        rng: Rng::new(options.seed),
    };
    let mut backoff = Backoff {
        attempt: 0,
        rng: Rng::new(options.seed ^ 0x5eed),
    };
    loop {
        let lost = match connect(&options) {
            Ok(mut ws) => {
                backoff.attempt = 0;
                serve(&mut ws, &mut game, &options)
            }
            Err(lost) => lost,
        };
        match lost {
            Lost::Refused(problem) => return Err(problem),
            Lost::Retry(problem) => {
                let pause = backoff.next_pause();
                eprintln!("game_host: {problem}; reconnecting in {pause:?}");
                std::thread::sleep(pause);
            }
        }
    }
}

/// Answers requests and broadcasts the simulation's events on one connection.
fn serve(ws: &mut Ws, game: &mut Game, options: &Options) -> Lost {
    let mut next_tick = Instant::now() + options.interval;
    loop {
        if let Err(problem) = serve_once(ws, game, options, &mut next_tick) {
            return Lost::Retry(problem);
        }
    }
}

fn serve_once(
    ws: &mut Ws,
    game: &mut Game,
    options: &Options,
    next_tick: &mut Instant,
) -> Result<(), String> {
    if Instant::now() >= *next_tick {
        *next_tick += options.interval;
        if let Some((event, data)) = game.tick() {
            send(
                ws,
                json!({"event": "host.broadcast", "data": {"event": event, "data": data}}),
            )?;
        }
    }
    let Some(message) = read(ws)? else {
        return Ok(());
    };
    let data = &message["data"];
    match message["event"].as_str() {
        Some("host.request") => {
            let mut broadcasts = Vec::new();
            let event = data["event"].as_str().unwrap_or("");
            let reply = match game.handle(event, &data["data"], &mut broadcasts) {
                Ok((event, answer)) => {
                    json!({"id": data["id"], "event": event, "data": answer})
                }
                Err((code, text)) => {
                    json!({"id": data["id"], "error": {"code": code, "message": text}})
                }
            };
            send(ws, json!({"event": "host.reply", "data": reply}))?;
            for (event, data) in broadcasts {
                send(
                    ws,
                    json!({"event": "host.broadcast", "data": {"event": event, "data": data}}),
                )?;
            }
        }
        Some(notice @ ("host.client_joined" | "host.client_left")) => {
            let what = if notice == "host.client_joined" {
                "connected"
            } else {
                "left"
            };
            println!(
                "client {} ({}) {what}",
                data["client"].as_str().unwrap_or("?"),
                data["sub"].as_str().unwrap_or("?")
            )
        }
        Some("error") => eprintln!("the gateway reports: {data}"),
        _ => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("game_host: {problem}");
            }
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("game_host: {problem}");
            ExitCode::FAILURE
        }
    }
}
