//! The keys a node derives from its configured access key.

/// The keys derived from the configured access key.
pub struct Keys {
    /// Signs and verifies access tokens (JWT HS256), as Azure SignalR does.
    pub access: Vec<u8>,
    /// Signs connection tokens; derived so that a connection token is never a valid JWT key.
    pub connection: [u8; 32],
}

impl Keys {
    pub fn new(access_key: &str) -> Keys {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(access_key.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"herald connection token v1");
        Keys {
            access: access_key.as_bytes().to_vec(),
            connection: mac.finalize().into_bytes().into(),
        }
    }
}
