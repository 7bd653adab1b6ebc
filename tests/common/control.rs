//! A loopback line protocol through which a test script (Node, or Python
//! driving a browser) asks the Rust test to act on the gateway, e.g.
//! `restart` -> `restarted`: the script's own stdout belongs to its test
//! runner, so the request cannot go there.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::{mint, mint_valid, unix_now, Server, SECRET};

/// Answers each line sent to the returned port with `handler(line)`, one
/// connection at a time, for as long as the test runs.
pub fn serve(mut handler: impl FnMut(&str) -> String + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the control port");
    let port = listener.local_addr().expect("control port").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok(mut writer) = stream.try_clone() else {
                continue;
            };
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let answer = handler(line.trim());
                if writeln!(writer, "{answer}").is_err() {
                    break;
                }
            }
        }
    });
    port
}

/// The commands the client library tests use: `restart` (SIGTERM, then the
/// same settings on the same port: a new history epoch), `freeze`/`thaw`
/// (SIGSTOP/SIGCONT: a peer that stops answering, then recovers) and
/// `short token` (a token for `carol` that expires in 3 s, minted now) and
/// `expired token` (one that expired a minute ago).
pub fn serve_gateway(server: Arc<Mutex<Server>>) -> u16 {
    serve(move |command| {
        let mut server = server.lock().expect("the server");
        match command {
            "restart" => {
                server.restart();
                "restarted".into()
            }
            "freeze" => {
                server.signal(libc::SIGSTOP);
                "frozen".into()
            }
            "thaw" => {
                server.signal(libc::SIGCONT);
                "thawed".into()
            }
            "short token" => mint_valid("carol", &[], &[], 3),
            "expired token" => mint(
                SECRET.as_bytes(),
                Some("carol"),
                Some(unix_now() - 60),
                serde_json::json!({}),
            ),
            other => format!("unknown command {other}"),
        }
    })
}
