//! The broadcast server a Rust developer writes in an afternoon: tokio-tungstenite, one
//! `tokio::sync::broadcast` channel, a task per connection. Every text frame a client sends
//! goes to every client, the sender included. Usage: tungstenite-broadcast PORT

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8083);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (tx, _) = broadcast::channel::<Message>(1 << 16);
    println!("tungstenite listening on {port}");
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
            let (mut sink, mut stream) = ws.split();
            let mut rx = tx.subscribe();
            let writer = tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(msg) => {
                            if sink.send(msg).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                }
            });
            while let Some(Ok(msg)) = stream.next().await {
                if msg.is_text() || msg.is_binary() {
                    let _ = tx.send(msg);
                }
            }
            writer.abort();
        });
    }
}
