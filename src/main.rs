//! The `tether` command line: parse arguments, load settings, run.

use log::{info, warn};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use tether::gateway::broker::BrokerEndpoint;
use tether::gateway::event_loop::{App, Server};
use tether::gateway::listen::{bind_all, local_addrs, resolve};
use tether::gateway::nofile;
use tether::gateway::setup::{authenticator, cluster_node, hub_config, shell_config, Reloader};
use tether::gateway::tls::{self, TlsState};
use tether::proto::auth::{parse_ttl, MintRequest};
use tether::proto::hub::Hub;
use tether::settings::{self, ConfigSource, IpAllowList, SettingError, Settings};

const USAGE: &str = "\
tether - a small WebSocket gateway

usage:
  tether [serve] [--config PATH]        run the gateway until SIGTERM/SIGINT
  tether token --sub ID [--permissions a,b] [--rooms r1,r2] [--role R] [--ttl 24h] [--config PATH]
                                        print one signed JWT
  tether check-config [--config PATH]   validate and print the effective settings
  tether echo [--host H] [--port P] [--tls-self-signed] [--config PATH]
                                        echo every message verbatim (conformance, benchmarks);
                                        --tls-self-signed serves wss with the generated certificate
  tether --version | --help

Settings: --config PATH, else $TETHER_CONFIG, else ./settings.json, else built-in defaults.
State (generated JWT secret, self-signed TLS certificate): $STATE_DIRECTORY, else ./tether-data.
SIGHUP re-reads the settings file (secrets and password, allowed_ip, allowed_origins,
limits, rooms.by_role, rooms.presence, host.request_timeout_ms, log.level; listen
addresses, TLS paths, rooms.history and the cluster block need a restart) and the TLS
certificate and key files.
";

/// Echo mode accepts messages this large (the conformance suite sends 16 MiB).
const ECHO_MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, Default)]
struct Args {
    command: String,
    config: Option<PathBuf>,
    sub: Option<String>,
    permissions: Vec<String>,
    rooms: Vec<String>,
    role: Option<String>,
    ttl: Option<String>,
    /// `--ttl` in seconds (24 h when absent), parsed with the other arguments.
    ttl_s: u64,
    host: Option<String>,
    port: Option<u16>,
    tls_self_signed: bool,
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_args(raw: Vec<String>) -> Result<Args, String> {
    let mut args = Args {
        command: "serve".into(),
        ..Args::default()
    };
    let mut it = raw.into_iter().peekable();
    if let Some(first) = it.peek() {
        if !first.starts_with('-') {
            args.command = first.clone();
            it.next();
        }
    }
    if !matches!(
        args.command.as_str(),
        "serve" | "token" | "check-config" | "echo"
    ) {
        return Err(format!("unknown command `{}`", args.command));
    }
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        if name == "--help" || name == "-h" {
            args.command = "help".into();
            return Ok(args);
        }
        if name == "--version" || name == "-V" {
            args.command = "version".into();
            return Ok(args);
        }
        if name == "--tls-self-signed" && args.command == "echo" && inline.is_none() {
            args.tls_self_signed = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        let allowed: &[&str] = match args.command.as_str() {
            "token" => &[
                "--config",
                "--sub",
                "--permissions",
                "--rooms",
                "--role",
                "--ttl",
            ],
            "echo" => &["--config", "--host", "--port"],
            _ => &["--config"],
        };
        if !allowed.contains(&name.as_str()) {
            return Err(format!("unknown option `{name}` for `{}`", args.command));
        }
        match name.as_str() {
            "--config" => args.config = Some(PathBuf::from(value()?)),
            "--sub" => args.sub = Some(value()?),
            "--permissions" => args.permissions = list(&value()?),
            "--rooms" => args.rooms = list(&value()?),
            "--role" => args.role = Some(value()?),
            "--ttl" => args.ttl = Some(value()?),
            "--host" => args.host = Some(value()?),
            "--port" => {
                let v = value()?;
                args.port = Some(
                    v.parse()
                        .map_err(|_| format!("--port: `{v}` is not a port number (0-65535)"))?,
                );
            }
            _ => unreachable!("checked against the allowed list"),
        }
    }
    // A missing `--sub` or a bad `--ttl` is a usage error (exit 2), like an
    // unknown option, not a settings problem (exit 1).
    if args.command == "token" {
        if args.sub.as_deref().is_none_or(str::is_empty) {
            return Err("token: --sub ID is required".into());
        }
        args.ttl_s =
            parse_ttl(args.ttl.as_deref().unwrap_or("24h")).map_err(|e| format!("--ttl: {e}"))?;
    }
    Ok(args)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().is_some_and(|a| a == "--version" || a == "-V") {
        println!("tether {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(raw) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("tether: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.command.as_str() {
        "help" => {
            print!("{USAGE}");
            Ok(())
        }
        "version" => {
            println!("tether {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "token" => cmd_token(&args),
        "check-config" => cmd_check_config(&args),
        "echo" => cmd_echo(&args),
        _ => cmd_serve(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(problems) => {
            for line in problems.lines() {
                eprintln!("tether: {line}");
            }
            ExitCode::from(1)
        }
    }
}

fn load(args: &Args) -> Result<(Settings, ConfigSource), String> {
    let source = settings::locate(args.config.as_deref());
    let loaded = settings::load(&source).map_err(|e| e.to_string())?;
    Ok((loaded, source))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn init_logging(level: log::LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // The logger passes everything; the global maximum filters, so that a
    // reload (SIGHUP) can raise or lower the level.
    let _ = simplelog::WriteLogger::init(log::LevelFilter::Trace, config, std::io::stderr());
    log::set_max_level(level);
}

/// The listener's TLS state from `server.websocket.tls` (`None`: plain ws).
fn tls_state(s: &Settings, listen_host: &str) -> Result<Option<TlsState>, String> {
    let names = tls::self_signed_names(listen_host);
    TlsState::from_settings(&s.server.websocket.tls, &settings::state_dir(), &names)
        .map_err(|e| format!("server.websocket.tls: {e}"))
}

fn scheme(tls: &Option<TlsState>) -> &'static str {
    if tls.is_some() {
        "wss"
    } else {
        "ws"
    }
}

fn cmd_serve(args: &Args) -> Result<(), String> {
    let (s, source) = load(args)?;
    init_logging(s.level_filter());
    for key in &s.ignored_keys {
        warn!("settings: {}", settings::ignored_key_warning(key));
    }
    let (secret, secret_source) = s
        .resolve_jwt_secret(env, &settings::state_dir())
        .map_err(|e| e.to_string())?;
    let allow = s.allowed_ips().map_err(|e| e.to_string())?;
    let ws = &s.server.websocket;
    let mut hub = Hub::new(hub_config(&s, &secret));
    let cluster = cluster_node(&s, &secret, &mut hub)?;
    let tls = tls_state(&s, &ws.host)?;
    let scheme = scheme(&tls);
    let listeners = bind_all(&ws.host, ws.port).map_err(|e| format!("server.websocket: {e}"))?;
    let addrs = local_addrs(&listeners);
    info!(
        "tether {} starting with {source}; jwt secret from {secret_source}",
        env!("CARGO_PKG_VERSION")
    );
    for warning in refused_listen_addrs(&allow, &addrs) {
        warn!("{warning}");
    }
    // Signals are handled once the server exists, so "listening" is said after.
    let mut server = Server::new(
        listeners,
        App::Gateway(Box::new(hub)),
        shell_config(&s, allow),
    )
    .map_err(|e| format!("cannot start the event loop: {e}"))?
    .with_tls(tls);
    let health = &s.server.health;
    // Port 0 asks the kernel for a free port for each listener: two zeros are
    // two listeners, not one shared port.
    let health_addrs = if health.host == ws.host && health.port == ws.port && ws.port != 0 {
        server.share_http_with_websocket();
        addrs.clone()
    } else {
        let listeners =
            bind_all(&health.host, health.port).map_err(|e| format!("server.health: {e}"))?;
        let health_addrs = local_addrs(&listeners);
        server
            .add_http_listeners(listeners)
            .map_err(|e| format!("server.health: {e}"))?;
        health_addrs
    };
    if let Some((node, address)) = cluster {
        server
            .add_endpoint(|registry, token| {
                Ok(Box::new(BrokerEndpoint::new(
                    node, address, registry, token,
                )?))
            })
            .map_err(|e| format!("cluster: {e}"))?;
    }
    tether::gateway::bridges::add_bridged_hosts(&mut server, &s, &source)?;
    let mut reloader = Reloader::new(source, s.clone());
    server.set_reloader(Box::new(move || reloader.reload()));
    for addr in health_addrs {
        info!("health endpoints on http://{addr}");
    }
    for addr in addrs {
        info!("listening on {scheme}://{addr}");
    }
    server.run().map_err(|e| format!("event loop failed: {e}"))
}

fn cmd_echo(args: &Args) -> Result<(), String> {
    let (mut s, _) = load(args)?;
    init_logging(s.level_filter());
    let allow = s.allowed_ips().map_err(|e| e.to_string())?;
    s.limits.max_message_bytes = s.limits.max_message_bytes.max(ECHO_MAX_MESSAGE);
    s.limits.max_outbound_bytes = s.limits.max_outbound_bytes.max(2 * ECHO_MAX_MESSAGE + 64);
    let host = args
        .host
        .clone()
        .unwrap_or_else(|| s.server.websocket.host.clone());
    let port = args.port.unwrap_or(s.server.websocket.port);
    if args.tls_self_signed {
        s.server.websocket.tls = settings::TlsSettings {
            cert: None,
            key: None,
            self_signed: true,
        };
    }
    let tls = tls_state(&s, &host)?;
    let scheme = scheme(&tls);
    let listeners = bind_all(&host, port).map_err(|e| e.to_string())?;
    let addrs = local_addrs(&listeners);
    let mut server = Server::new(listeners, App::Echo, shell_config(&s, allow))
        .map_err(|e| format!("cannot start the event loop: {e}"))?
        .with_tls(tls);
    for addr in addrs {
        info!("echo: listening on {scheme}://{addr}");
    }
    server.run().map_err(|e| format!("event loop failed: {e}"))
}

fn cmd_token(args: &Args) -> Result<(), String> {
    let sub = args
        .sub
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or("token: --sub ID is required")?;
    let (s, source) = load(args)?;
    // A secret generated here would not be the gateway's (SPEC §13): only sign
    // with one that exists.
    let state_dir = settings::state_dir();
    let (secret, _) = s
        .existing_jwt_secret(env, &state_dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "token: {}",
                settings::no_jwt_secret_report(&source, &state_dir)
            )
        })?;
    let request = MintRequest {
        sub,
        permissions: args.permissions.clone(),
        rooms: args.rooms.clone(),
        role: args.role.clone(),
        ttl_s: args.ttl_s,
    };
    let (token, _) = authenticator(&s, &secret).mint(&request, unix_now())?;
    println!("{token}");
    Ok(())
}

/// Warnings for websocket listen addresses whose clients `allowed_ip` refuses
/// (`localhost` binds ::1 too, which seed 000's `127.0.0.1` does not allow).
fn refused_listen_addrs(allow: &IpAllowList, addrs: &[SocketAddr]) -> Vec<String> {
    addrs
        .iter()
        .filter_map(|&addr| allow.refuses_clients_at(addr))
        .map(|warning| format!("server.websocket.host: {warning}"))
        .collect()
}

/// Whether a problem was already reported under `key`, a key inside it or one
/// around it (so a check of the same value does not report it twice).
fn reported(problems: &[SettingError], key: &str) -> bool {
    problems.iter().any(|p| {
        let (a, b) = (p.key.as_str(), key);
        a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
    })
}

fn cmd_check_config(args: &Args) -> Result<(), String> {
    let source = settings::locate(args.config.as_deref());
    // Every problem in one run: the checks below run on the settings as far
    // as they could be read, skipping values already reported.
    let (loaded, mut problems) = settings::load_lenient(&source);
    let Some(s) = loaded else {
        return Err(join(&problems));
    };
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    // The secret is read (never generated) so that checking has no side effects.
    let secret_keys = [
        "JWT_SECRET",
        "server.websocket.auth.jwt_secret",
        "server.websocket.auth.jwt_secret_file",
    ];
    if !secret_keys.iter().any(|key| reported(&problems, key)) {
        let state_dir = settings::state_dir();
        match s.existing_jwt_secret(env, &state_dir) {
            Ok(Some((_, from))) => notes.push(format!("jwt secret from {from}")),
            Ok(None) => notes.push(format!(
                "jwt secret: none configured; the first start generates {}",
                state_dir.join(settings::JWT_KEY_FILE).display()
            )),
            Err(e) => problems.push(e),
        }
    }
    // The listen addresses must resolve (binding is left to `serve`).
    let ws = &s.server.websocket;
    let health = &s.server.health;
    for (key, host, port) in [
        ("server.websocket.host", &ws.host, ws.port),
        ("server.health.host", &health.host, health.port),
    ] {
        if reported(&problems, key) {
            continue;
        }
        match resolve(host, port) {
            Ok(addrs) if key == "server.websocket.host" => {
                if let Ok(allow) = s.allowed_ips() {
                    warnings.extend(refused_listen_addrs(&allow, &addrs));
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(SettingError::new(key, e.to_string())),
        }
    }
    // The same check as at start, against the limit `serve` would raise to.
    if let (Ok(allow), Ok(limit)) = (s.allowed_ips(), nofile::current()) {
        let cfg = shell_config(&s, allow);
        warnings.extend(nofile::fit_warning(&cfg, nofile::reachable(limit)));
    }
    // The TLS files are read and matched (a self-signed pair is not generated).
    if !reported(&problems, "server.websocket.tls") {
        match tls::check(&ws.tls, &settings::state_dir()) {
            Ok(note) => notes.extend(note.map(|note| format!("tls: {note}"))),
            Err(e) => problems.push(SettingError::new("server.websocket.tls", e.to_string())),
        }
    }
    warnings.extend(
        s.ignored_keys
            .iter()
            .map(|k| settings::ignored_key_warning(k)),
    );
    for warning in &warnings {
        eprintln!("tether: warning: {warning}");
    }
    if !problems.is_empty() {
        return Err(join(&problems));
    }
    for note in notes {
        eprintln!("tether: {note}");
    }
    eprintln!("tether: settings from {source} are valid");
    println!("{}", s.redacted_pretty());
    Ok(())
}

fn join(problems: &[SettingError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
