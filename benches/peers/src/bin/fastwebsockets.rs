//! Bench peer: fastwebsockets (hyper upgrade) on a current-thread tokio
//! runtime. Paths: `/pub` broadcasts each message to every `/sub`
//! connection; any other path echoes.
//! Usage: peer-fastwebsockets PORT

use bytes::Bytes;
use fastwebsockets::{upgrade, FragmentCollector, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

type Hub = broadcast::Sender<(OpCode, Bytes)>;

async fn client(fut: upgrade::UpgradeFut, path: String, hub: Hub) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    match path.as_str() {
        "/pub" => loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => return Ok(()),
                op @ (OpCode::Text | OpCode::Binary) => {
                    let _ = hub.send((op, Bytes::copy_from_slice(&frame.payload)));
                }
                _ => {}
            }
        },
        "/sub" => {
            // Subscribers only receive in this bench, so this task only writes.
            let mut rx = hub.subscribe();
            loop {
                match rx.recv().await {
                    Ok((op, bytes)) => {
                        ws.write_frame(Frame::new(true, op, None, Payload::Borrowed(&bytes)))
                            .await?
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return Ok(()),
                }
            }
        }
        _ => loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => return Ok(()),
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        },
    }
}

async fn upgrade_request(
    mut req: Request<Incoming>,
    hub: Hub,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let path = req.uri().path().to_owned();
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let _ = client(fut, path, hub).await;
    });
    Ok(response)
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9002);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let (hub, _) = broadcast::channel::<(OpCode, Bytes)>(1024);
        eprintln!("fastwebsockets peer on 127.0.0.1:{port}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let hub = hub.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = service_fn(move |req| upgrade_request(req, hub.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}
