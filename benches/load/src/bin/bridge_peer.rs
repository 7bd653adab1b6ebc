//! tether-bridge-peer: the cheap hosts of benches/bridges.sh, so that the
//! gateway is what is measured (SPEC §11 bridges beside a WebSocket host).
//!
//!   tether-bridge-peer line EVENT       a `command` host: registers EVENT on
//!                                       stdout, answers every host.request
//!                                       line with a fixed host.reply line
//!   tether-bridge-peer http PORT        a `url` host: HTTP/1.1 keep-alive on
//!                                       127.0.0.1:PORT, one thread (mio), every
//!                                       POST answered with a fixed 200
//!
//! Both answer `{"event":"rpc","data":0}`, as the load tool's own host does,
//! and parse only what they must (the request id; the head's Content-Length).
//! Std and mio only; no allocation per request.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};

const USAGE: &str = "usage: tether-bridge-peer line EVENT | http PORT";
/// The answer of the backend, and the `host.reply` of the program.
const ANSWER: &[u8] = b"{\"event\":\"rpc\",\"data\":0}";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [mode, event] if mode == "line" => line_host(event),
        [mode, port] if mode == "http" => match port.parse::<u16>() {
            Ok(port) => http_backend(port),
            Err(_) => Err(io::Error::other(USAGE)),
        },
        _ => Err(io::Error::other(USAGE)),
    };
    if let Err(e) = result {
        eprintln!("tether-bridge-peer: {e}");
        std::process::exit(1);
    }
}

/// The digits after the first `"id":` of a line.
fn request_id(line: &[u8]) -> Option<&[u8]> {
    let at = line.windows(5).position(|w| w == b"\"id\":")? + 5;
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    (digits > 0).then(|| &line[at..at + digits])
}

/// A program host on stdin/stdout: replies are flushed once no more
/// request is buffered, so a burst of requests costs one write.
fn line_host(event: &str) -> io::Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, io::stdin().lock());
    let mut output = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    writeln!(
        output,
        "{{\"event\":\"host.register\",\"data\":{{\"events\":{{\"{event}\":null}}}}}}"
    )?;
    output.flush()?;
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.starts_with(b"{\"event\":\"host.request\"") {
            if let Some(id) = request_id(&line) {
                output.write_all(b"{\"event\":\"host.reply\",\"data\":{\"id\":")?;
                output.write_all(id)?;
                output.write_all(b",\"event\":\"rpc\",\"data\":0}}\n")?;
            }
        }
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
}

/// An HTTP backend on one thread (mio, edge-triggered, as event-driven
/// servers are): each connection kept alive, its complete requests answered
/// with one write.
fn http_backend(port: u16) -> io::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<HttpConn>> = Vec::new();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        ANSWER.len()
    )
    .into_bytes();
    response.extend_from_slice(ANSWER);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut sock, _)) = listener.accept() {
                    let slot = conns
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(conns.len());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    poll.registry().register(&mut sock, Token(slot), interest)?;
                    sock.set_nodelay(true)?;
                    let conn = HttpConn {
                        sock,
                        buf: vec![0; 1 << 20],
                        filled: 0,
                        out: Vec::new(),
                    };
                    if slot == conns.len() {
                        conns.push(Some(conn));
                    } else {
                        conns[slot] = Some(conn);
                    }
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.serve(&response).is_err() {
                let _ = poll.registry().deregister(&mut conn.sock);
                conns[slot] = None;
            }
        }
    }
}

const LISTENER: Token = Token(usize::MAX);

struct HttpConn {
    sock: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
}

impl HttpConn {
    /// Reads what arrived, answers every complete request, writes what it
    /// can; an error (or the peer's close) ends the connection.
    fn serve(&mut self, response: &[u8]) -> io::Result<()> {
        loop {
            if self.filled == self.buf.len() {
                return Err(io::Error::other("request over 1 MiB"));
            }
            match self.sock.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut start = 0;
        while let Some(end) = self.buf[start..self.filled]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            let head_end = start + end + 4;
            let body = content_length(&self.buf[start..head_end])
                .ok_or_else(|| io::Error::other("bad Content-Length"))?;
            if head_end + body > self.filled {
                break;
            }
            start = head_end + body;
            self.out.extend_from_slice(response);
        }
        self.buf.copy_within(start..self.filled, 0);
        self.filled -= start;
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `Content-Length` of a request head (0 when absent).
fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    for line in text.split("\r\n") {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                return value.trim().parse().ok();
            }
        }
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_and_lengths_are_found() {
        let line = b"{\"event\":\"host.request\",\"data\":{\"id\":4711,\"client\":\"c\"}}";
        assert_eq!(request_id(line), Some(&b"4711"[..]));
        assert_eq!(request_id(b"{\"event\":\"connected\"}"), None);
        let head = b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(content_length(head), Some(12));
        assert_eq!(content_length(b"GET / HTTP/1.1\r\n\r\n"), Some(0));
    }
}
