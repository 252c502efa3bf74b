//! The transports a SignalR client may use, as negotiate names them.

/// How the connection's bytes travel; decides the wire form queued for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Full duplex over one socket: frames both ways, binary included.
    WebSockets,
    /// Server-to-client events on a streaming response, sends by POST; text only.
    ServerSentEvents,
    /// A GET that waits for messages, sends by POST: for networks that allow nothing else.
    LongPolling,
}

impl TransportKind {
    /// Every transport, so per-transport tables (metrics) cannot miss one.
    pub const ALL: [TransportKind; 3] = [
        TransportKind::WebSockets,
        TransportKind::ServerSentEvents,
        TransportKind::LongPolling,
    ];

    /// The lower-case name metric labels use.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSockets => "websockets",
            TransportKind::ServerSentEvents => "serversentevents",
            TransportKind::LongPolling => "longpolling",
        }
    }

    /// The name SignalR clients use in negotiate.
    pub fn signalr_name(self) -> &'static str {
        match self {
            TransportKind::WebSockets => "WebSockets",
            TransportKind::ServerSentEvents => "ServerSentEvents",
            TransportKind::LongPolling => "LongPolling",
        }
    }

    /// The transport a client names in negotiate or in its `transport` query parameter;
    /// `None` for a name SignalR does not define.
    pub fn from_signalr_name(name: &str) -> Option<TransportKind> {
        TransportKind::ALL
            .into_iter()
            .find(|t| t.signalr_name() == name)
    }

    /// Whether the transport carries binary (MessagePack); Server-Sent Events does not.
    pub fn carries_binary(self) -> bool {
        self != TransportKind::ServerSentEvents
    }

    /// Long polling keeps itself alive: no pings, and the poll timeout replaces the client
    /// timeout.
    pub fn inherent_keep_alive(self) -> bool {
        self == TransportKind::LongPolling
    }
}
