//! Bench peer: tokio-tungstenite on a current-thread tokio runtime, default
//! WebSocketConfig. Paths: `/pub` broadcasts each message to every `/sub`
//! connection; any other path echoes.
//! Usage: peer-tokio-tungstenite PORT

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

// The handshake callback's signature (a large Err) is tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, hub: broadcast::Sender<Message>) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    match path.as_str() {
        "/pub" => {
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    let _ = hub.send(msg);
                }
            }
        }
        "/sub" => {
            let mut rx = hub.subscribe();
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(msg) => if ws.send(msg).await.is_err() { return },
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                    incoming = ws.next() => match incoming {
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        }
        _ => {
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9001);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let (hub, _) = broadcast::channel(1024);
        eprintln!("tokio-tungstenite peer on 127.0.0.1:{port}");
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, hub.clone()));
            }
        }
    });
}
