//! `POST /hubs/{hub}?id=…`: what a Server-Sent Events or long-polling client sends. The data
//! goes to the connection's session on the shard that owns it — or, in a cluster, to the node
//! that holds it.
//!
//! A POST body streams into the session piece by piece as it arrives, each piece dispatched
//! before the next is read, so a body of any size (the official clients send a burst of
//! invocations as one POST) costs no more than one piece; and while the connection's own
//! queue is backed up the next piece waits, so TCP pushes back on the client.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::admission;
use super::http_conn::{HttpConn, get};
use super::inflow;
use super::longpoll;
use crate::fault::HttpFault;
use crate::hub::connection::Attachment;
use crate::hub::definition::HubDef;
use crate::hub::node::IdState;
use crate::hub::{ConnectionId, Shard, TransportKind};
use crate::web::{Body, TimedBody, status};

impl Attachment for HttpConn {
    fn receive_forwarded(self: Rc<Self>, payload: Bytes) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            // Not held back by the connection's queue: the backplane's reader waits for this,
            // and must not wait for one client.
            if let Err(e) = receive(&self.shard, self.conn.id, payload, false).await {
                tracing::debug!(connection = %self.conn.id, "forwarded data refused: {e}");
            }
        })
    }
}

/// Feeds a piece of a POST body to the connection's session, on the owning shard — with
/// `wait`, once the connection may be read (its own queue drained below the low watermark,
/// the node within its input budget).
async fn receive(
    shard: &Shard,
    id: ConnectionId,
    piece: Bytes,
    wait: bool,
) -> Result<(), HttpFault> {
    let hc = get(shard, id).ok_or(HttpFault::ConnectionNotFound)?;
    let Some(mut session) = hc.session.borrow_mut().take() else {
        return Err(HttpFault::ConnectionActive);
    };
    let readable = if wait {
        inflow::readable(&hc.shard, &hc.conn, session.has_partial()).await
    } else {
        Ok(())
    };
    let outcome = match readable {
        Ok(()) => {
            hc.conn.touch_received(hc.shard.coarse_now());
            hc.shard.metrics.bytes_in(piece.len());
            let outcome = session.receive(&piece).await;
            // As for a WebSocket: what a piece published reaches the other shards before
            // the next piece is read (`Shard::delivered_everywhere`).
            if wait && hc.conn.has_published() && hc.shard.node.shards() > 1 {
                hc.shard.delivered_everywhere().await;
            }
            outcome
        }
        // Closing meanwhile: what remains of the body is of no use.
        Err(()) => Ok(()),
    };
    *hc.session.borrow_mut() = Some(session);
    if let Err(reason) = outcome {
        hc.conn.request_close(reason);
    }
    Ok(())
}

/// Marks the start (`true`) or end of a POST body for connection `id`, on its shard; a
/// second POST while one is being read is refused.
fn posting(shard: &Shard, id: ConnectionId, start: bool) -> Result<(), HttpFault> {
    let hc = get(shard, id).ok_or(HttpFault::ConnectionNotFound)?;
    if start && hc.posting.replace(true) {
        return Err(HttpFault::ConnectionActive);
    }
    if !start {
        hc.posting.set(false);
    }
    Ok(())
}

/// `POST /hubs/{hub}?id=…`: data from a Server-Sent Events or long-polling client.
pub async fn send(
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    hub: &HubDef,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, HttpFault> {
    let token = admission::token(shard, hub, id).ok_or(HttpFault::ConnectionNotFound)?;
    let timeout = Duration::from_millis(shard.node.config.server.body_timeout_ms);
    let owner = match shard.node.registry.state(token.id) {
        IdState::Ended => return Err(HttpFault::ConnectionNotFound),
        IdState::Active {
            transport: TransportKind::WebSockets,
            ..
        } => return Err(HttpFault::PostOnWebSocket),
        IdState::Active { shard: owner, .. } => owner,
        IdState::Unknown => {
            // Held by another node of the cluster: the data goes there, piece by piece, in
            // order.
            let backplane = &shard.node.backplane;
            if backplane.await_remote(token.id).await {
                let mut body = TimedBody::new(req.into_body(), timeout);
                while let Some(piece) = body.next().await? {
                    backplane.forward(hub.id, token.id, piece.to_vec());
                }
                return Ok(status(StatusCode::OK));
            }
            // A long-polling client may post its handshake before its first poll.
            if !hub.transports.contains(&TransportKind::LongPolling) {
                return Err(HttpFault::ConnectionNotFound);
            }
            longpoll::start(shard, hub, req.headers(), query, id)?;
            shard.id
        }
    };
    let id = token.id;
    shard
        .on_shard(owner, move |owner| posting(owner, id, true))
        .await
        .unwrap_or(Err(HttpFault::ConnectionNotFound))?;
    let mut body = TimedBody::new(req.into_body(), timeout);
    let outcome = async {
        while let Some(piece) = body.next().await? {
            let (tx, rx) = oneshot::channel();
            shard
                .run_on(owner, move |owner| {
                    let owner = owner.clone();
                    tokio::task::spawn_local(async move {
                        let _ = tx.send(receive(&owner, id, piece, true).await);
                    });
                })
                .await;
            rx.await.unwrap_or(Err(HttpFault::ConnectionNotFound))?;
        }
        Ok(())
    }
    .await;
    shard
        .on_shard(owner, move |owner| posting(owner, id, false))
        .await;
    outcome.map(|()| status(StatusCode::OK))
}
