//! Every error a client can see, in one table: HTTP refusals (status, stable code, message)
//! and the reasons a connection is closed (SignalR Close message, WebSocket close code).
//!
//! The stable codes are what REST error bodies carry and what metrics are labelled with, so
//! they never change once published.

use http::StatusCode;

use crate::protocol::ProtocolError;
use crate::protocol::frame::FrameError;
use crate::protocol::handshake::HandshakeError;

/// Why an HTTP request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpFault {
    #[error("No route matches this request.")]
    NotFound,
    #[error("Hub '{0}' is not declared.")]
    UnknownHub(String),
    /// `allow` is what the response's `Allow` header lists: the methods the resource takes.
    #[error("The {method} method is not allowed here.")]
    MethodNotAllowed { method: String, allow: String },
    #[error("Connection ID required")]
    ConnectionIdRequired,
    #[error("No Connection with that ID")]
    ConnectionNotFound,
    #[error("The connection with that ID is already active.")]
    ConnectionActive,
    #[error("POST requests are not allowed for WebSocket connections.")]
    PostOnWebSocket,
    #[error("The {0} transport is not enabled for this hub.")]
    TransportNotSupported(&'static str),
    #[error("Cannot change transports mid-connection.")]
    TransportChanged,
    #[error("Bad WebSocket upgrade request: {0}.")]
    BadUpgrade(&'static str),
    #[error("Only WebSocket version 13 is supported.")]
    WebSocketVersion,
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    #[error("Forbidden: {0}")]
    Forbidden(String),
    #[error("The request body exceeds {0} bytes.")]
    BodyTooLarge(usize),
    #[error("Invalid request body: {0}")]
    InvalidBody(String),
    #[error("Invalid {0}: {1}")]
    InvalidParameter(&'static str, String),
    #[error("Herald is shutting down.")]
    ShuttingDown,
    #[error("The request body did not arrive within server.body_timeout_ms.")]
    BodyTimeout,
    #[error("{0}")]
    MembershipLimit(String),
    #[error("No connection of this hub is in group '{0}'.")]
    GroupNotFound(String),
    #[error("User '{0}' has no connection to this hub.")]
    UserNotFound(String),
    #[error("User '{0}' is not in group '{1}'.")]
    UserNotInGroup(String, String),
}

impl HttpFault {
    /// Every stable code, in the order of [`HttpFault::index`].
    pub const CODES: [&'static str; 22] = [
        "not_found",
        "hub_not_found",
        "method_not_allowed",
        "connection_id_required",
        "connection_not_found",
        "connection_active",
        "post_on_websocket",
        "transport_not_supported",
        "bad_upgrade",
        "websocket_version",
        "unauthorized",
        "forbidden",
        "body_too_large",
        "invalid_body",
        "invalid_parameter",
        "shutting_down",
        "transport_changed",
        "body_timeout",
        "membership_limit",
        "group_not_found",
        "user_not_found",
        "user_not_in_group",
    ];

    pub fn index(&self) -> usize {
        match self {
            HttpFault::NotFound => 0,
            HttpFault::UnknownHub(_) => 1,
            HttpFault::MethodNotAllowed { .. } => 2,
            HttpFault::ConnectionIdRequired => 3,
            HttpFault::ConnectionNotFound => 4,
            HttpFault::ConnectionActive => 5,
            HttpFault::PostOnWebSocket => 6,
            HttpFault::TransportNotSupported(_) => 7,
            HttpFault::BadUpgrade(_) => 8,
            HttpFault::WebSocketVersion => 9,
            HttpFault::Unauthorized(_) => 10,
            HttpFault::Forbidden(_) => 11,
            HttpFault::BodyTooLarge(_) => 12,
            HttpFault::InvalidBody(_) => 13,
            HttpFault::InvalidParameter(..) => 14,
            HttpFault::ShuttingDown => 15,
            HttpFault::TransportChanged => 16,
            HttpFault::BodyTimeout => 17,
            HttpFault::MembershipLimit(_) => 18,
            HttpFault::GroupNotFound(_) => 19,
            HttpFault::UserNotFound(_) => 20,
            HttpFault::UserNotInGroup(..) => 21,
        }
    }

    pub fn code(&self) -> &'static str {
        Self::CODES[self.index()]
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HttpFault::NotFound
            | HttpFault::UnknownHub(_)
            | HttpFault::ConnectionNotFound
            | HttpFault::GroupNotFound(_)
            | HttpFault::UserNotFound(_)
            | HttpFault::UserNotInGroup(..) => StatusCode::NOT_FOUND,
            HttpFault::MethodNotAllowed { .. } | HttpFault::PostOnWebSocket => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            HttpFault::ConnectionActive | HttpFault::MembershipLimit(_) => StatusCode::CONFLICT,
            HttpFault::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpFault::WebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            HttpFault::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpFault::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpFault::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpFault::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            HttpFault::ConnectionIdRequired
            | HttpFault::TransportNotSupported(_)
            | HttpFault::TransportChanged
            | HttpFault::BadUpgrade(_)
            | HttpFault::InvalidBody(_)
            | HttpFault::InvalidParameter(..) => StatusCode::BAD_REQUEST,
        }
    }

    /// The methods a 405 names in its `Allow` header (RFC 9110 §15.5.6 requires one).
    pub fn allow(&self) -> Option<&str> {
        match self {
            HttpFault::MethodNotAllowed { allow, .. } => Some(allow),
            // A WebSocket connection is only ever reached by its upgrade.
            HttpFault::PostOnWebSocket => Some("GET"),
            _ => None,
        }
    }

    /// The JSON error body (Azure SignalR's `ErrorDetail` shape).
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
        }))
        .expect("JSON encodes")
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CloseReason {
    /// The client sent a Close message or a WebSocket close frame.
    ClientClosed,
    /// The socket ended or failed without a close.
    ClientGone,
    /// The client failed the SignalR handshake.
    Handshake(HandshakeError),
    /// The client sent bytes that are not valid hub messages.
    Protocol(ProtocolError),
    /// The client broke the WebSocket protocol.
    WebSocket(FrameError),
    /// The client did not read fast enough: its outbound queue passed `cap` bytes.
    SlowConsumer { cap: usize },
    /// The client sent nothing, not even a ping, within the client timeout.
    ClientTimeout,
    /// A write to the client made no progress within the send timeout.
    SendTimeout,
    /// Herald is shutting down; the client should reconnect (to another node).
    ServerShutdown,
    /// Closed through the REST API, with an optional reason.
    ClosedByServer(Option<String>),
}

impl CloseReason {
    /// Every stable label, in the order of [`CloseReason::index`].
    pub const CODES: [&'static str; 10] = [
        "client_closed",
        "client_gone",
        "handshake_failed",
        "protocol_error",
        "websocket_error",
        "slow_consumer",
        "client_timeout",
        "send_timeout",
        "server_shutdown",
        "closed_by_server",
    ];

    pub fn index(&self) -> usize {
        match self {
            CloseReason::ClientClosed => 0,
            CloseReason::ClientGone => 1,
            CloseReason::Handshake(_) => 2,
            CloseReason::Protocol(_) => 3,
            CloseReason::WebSocket(_) => 4,
            CloseReason::SlowConsumer { .. } => 5,
            CloseReason::ClientTimeout => 6,
            CloseReason::SendTimeout => 7,
            CloseReason::ServerShutdown => 8,
            CloseReason::ClosedByServer(_) => 9,
        }
    }

    pub fn code(&self) -> &'static str {
        Self::CODES[self.index()]
    }

    /// The `error` text of the SignalR Close message sent before closing, and whether the
    /// client may reconnect; `None` when no Close message is due (the client left, stopped
    /// reading, or never finished its handshake).
    pub fn close_message(&self) -> Option<(Option<String>, bool)> {
        match self {
            CloseReason::ClientClosed
            | CloseReason::ClientGone
            | CloseReason::Handshake(_)
            | CloseReason::SendTimeout => None,
            CloseReason::Protocol(e) => Some((Some(format!("Connection closed with an error. {e}")), false)),
            CloseReason::WebSocket(e) => Some((Some(format!("Connection closed with an error. WebSocket: {e}.")), false)),
            CloseReason::SlowConsumer { cap } => Some((
                Some(format!(
                    "Connection closed: the client did not read fast enough and more than {cap} bytes were queued for it."
                )),
                true,
            )),
            CloseReason::ClientTimeout => Some((
                Some("Connection closed: nothing was received from the client within the client timeout.".into()),
                true,
            )),
            CloseReason::ServerShutdown => Some((Some("Server is shutting down.".into()), true)),
            CloseReason::ClosedByServer(reason) => Some((reason.clone(), false)),
        }
    }

    /// The WebSocket close code that follows.
    pub fn websocket_code(&self) -> u16 {
        match self {
            CloseReason::WebSocket(e) => e.close_code(),
            CloseReason::Protocol(ProtocolError::TooLarge { .. }) => 1009,
            CloseReason::SlowConsumer { .. } => 1008,
            _ => 1000,
        }
    }
}
