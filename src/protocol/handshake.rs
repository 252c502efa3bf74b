//! The SignalR handshake: the client's first message names the hub protocol and its version;
//! the server answers `{}` or `{"error": "..."}`, both followed by the record separator.

use serde::Deserialize;

use super::{Protocol, RECORD_SEPARATOR};

/// The client's handshake request, kept as sent so an error can name what was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The hub protocol's name (`json`, `messagepack`).
    pub protocol: String,
    /// The protocol version; version 2 asks for stateful reconnect.
    pub version: u32,
}

/// Why a handshake was refused. The text goes back to the client in the handshake response,
/// worded as ASP.NET Core words it, so clients and their developers see familiar errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request is not JSON (the parser's words).
    #[error("The handshake request is not valid JSON: {0}")]
    Json(String),
    /// `protocol` or `version` is absent (its name).
    #[error("Missing required property '{0}'.")]
    Missing(&'static str),
    /// No record separator within the limit (in bytes), so the handshake cannot hold a shard's
    /// buffer hostage.
    #[error("The handshake request exceeded {0} bytes.")]
    TooLarge(usize),
    /// A protocol Herald does not speak (the name asked for).
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    /// A version above [`Protocol::max_version`].
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion {
        /// The protocol asked for.
        protocol: String,
        /// The version asked for.
        version: u32,
    },
    /// A binary protocol over a text-only transport (Server-Sent Events); the protocol name.
    #[error(
        "Cannot use the '{0}' protocol on the current transport. The transport does not support 'Binary' transfer format."
    )]
    NeedsBinary(String),
    /// No complete handshake within the handshake timeout, which frees the slot an idle
    /// socket would hold.
    #[error("Handshake was canceled.")]
    TimedOut,
}

#[derive(Deserialize)]
struct Wire {
    protocol: Option<String>,
    version: Option<u32>,
}

/// Decodes the handshake request at the start of `buf`: `Ok(None)` until its separator has
/// arrived, otherwise the request and the bytes it used.
pub fn decode_request(
    buf: &[u8],
    limit: usize,
) -> Result<Option<(HandshakeRequest, usize)>, HandshakeError> {
    let Some(end) = buf.iter().position(|&b| b == RECORD_SEPARATOR) else {
        return if buf.len() > limit {
            Err(HandshakeError::TooLarge(limit))
        } else {
            Ok(None)
        };
    };
    if end > limit {
        return Err(HandshakeError::TooLarge(limit));
    }
    let wire: Wire =
        serde_json::from_slice(&buf[..end]).map_err(|e| HandshakeError::Json(e.to_string()))?;
    let request = HandshakeRequest {
        protocol: wire.protocol.ok_or(HandshakeError::Missing("protocol"))?,
        version: wire.version.ok_or(HandshakeError::Missing("version"))?,
    };
    Ok(Some((request, end + 1)))
}

impl HandshakeRequest {
    /// The protocol to speak, or why the request cannot be served. Every version up to the
    /// highest Herald speaks is accepted, as ASP.NET Core does (signalrcore sends 0); a version
    /// below 2 turns stateful reconnect off.
    /// Like [`HandshakeRequest::select`], on a transport that may not carry binary.
    pub fn select_for(&self, binary_ok: bool) -> Result<Protocol, HandshakeError> {
        let protocol = self.select()?;
        if protocol.is_binary() && !binary_ok {
            return Err(HandshakeError::NeedsBinary(self.protocol.clone()));
        }
        Ok(protocol)
    }

    /// The protocol this request asks for, if Herald speaks it at that version; transports
    /// that carry binary call this, the others [`HandshakeRequest::select_for`].
    pub fn select(&self) -> Result<Protocol, HandshakeError> {
        let protocol = match self.protocol.as_str() {
            "json" => Protocol::Json,
            "messagepack" => Protocol::MessagePack,
            other => return Err(HandshakeError::UnsupportedProtocol(other.to_string())),
        };
        if self.version > protocol.max_version() {
            return Err(HandshakeError::UnsupportedVersion {
                protocol: self.protocol.clone(),
                version: self.version,
            });
        }
        Ok(protocol)
    }
}

/// The handshake response: `{}` on success, `{"error":"…"}` otherwise.
pub fn encode_response(error: Option<&str>) -> Vec<u8> {
    let mut out = match error {
        None => b"{}".to_vec(),
        Some(error) => {
            serde_json::to_vec(&serde_json::json!({ "error": error })).expect("JSON encodes")
        }
    };
    out.push(RECORD_SEPARATOR);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_at_every_split_and_leaves_the_rest() {
        let input = b"{\"protocol\":\"json\",\"version\":1,\"extra\":0}\x1e{\"type\":6}\x1e";
        let end = input.iter().position(|&b| b == 0x1e).unwrap();
        for split in 0..input.len() {
            let got = decode_request(&input[..split], 1024).unwrap();
            if split <= end {
                assert!(got.is_none(), "split {split}");
            }
        }
        let (req, used) = decode_request(input, 1024).unwrap().unwrap();
        assert_eq!(req.protocol, "json");
        assert_eq!(req.version, 1);
        assert_eq!(&input[used..], b"{\"type\":6}\x1e");
        assert_eq!(req.select(), Ok(Protocol::Json));
    }

    #[test]
    fn refuses_with_the_aspnet_wording() {
        let req = |p: &str, v: u32| HandshakeRequest {
            protocol: p.into(),
            version: v,
        };
        assert_eq!(
            req("xml", 1).select().unwrap_err().to_string(),
            "The protocol 'xml' is not supported."
        );
        assert_eq!(
            req("json", 3).select().unwrap_err().to_string(),
            "The server does not support version 3 of the 'json' protocol."
        );
        assert!(req("json", 2).select().is_ok());
        assert!(
            req("json", 0).select().is_ok(),
            "signalrcore sends version 0"
        );
        assert_eq!(
            decode_request(b"{\"version\":1}\x1e", 1024).unwrap_err(),
            HandshakeError::Missing("protocol")
        );
        assert!(matches!(
            decode_request(b"nope\x1e", 1024),
            Err(HandshakeError::Json(_))
        ));
        assert_eq!(
            decode_request(&[b' '; 100], 64).unwrap_err(),
            HandshakeError::TooLarge(64)
        );
    }

    #[test]
    fn encodes_responses_byte_for_byte() {
        assert_eq!(encode_response(None), b"{}\x1e");
        assert_eq!(
            encode_response(Some("no")),
            b"{\"error\":\"no\"}\x1e".to_vec()
        );
    }
}
