//! A loopback line protocol through which a test script (Node, or Python
//! driving a browser) asks the Rust test to act on the gateway, e.g.
//! `restart` -> `restarted`: the script's own stdout belongs to its test
//! runner, so the request cannot go there.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

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
