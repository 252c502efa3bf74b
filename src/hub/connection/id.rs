//! Connection ids: what a client and the REST API call a connection.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The public id of a connection: 16 random bytes, written as 22 base64url characters, as
/// ASP.NET Core writes its connection ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u128);

impl ConnectionId {
    pub fn random() -> ConnectionId {
        ConnectionId(rand::random())
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> ConnectionId {
        ConnectionId(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 22];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.to_bytes(), &mut buf)
            .expect("22 bytes hold 16 bytes of base64");
        f.write_str(std::str::from_utf8(&buf[..n]).expect("base64 is ASCII"))
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ConnectionId {
    type Err = ();
    fn from_str(s: &str) -> Result<ConnectionId, ()> {
        if s.len() != 22 {
            return Err(());
        }
        let mut buf = [0u8; 18];
        let n = URL_SAFE_NO_PAD.decode_slice(s, &mut buf).map_err(|_| ())?;
        if n != 16 {
            return Err(());
        }
        let id = ConnectionId::from_bytes(buf[..16].try_into().expect("16 bytes"));
        // Reject non-canonical spellings, so that one id has exactly one string form.
        if id.to_string() != s {
            return Err(());
        }
        Ok(id)
    }
}

/// Connection ids are random, so their low bits are already a good hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64 ^ (n >> 64) as u64;
    }
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = ConnectionId::random();
        let s = id.to_string();
        assert_eq!(s.len(), 22);
        assert_eq!(s.parse::<ConnectionId>(), Ok(id));
        assert!("short".parse::<ConnectionId>().is_err());
        assert!("!!!!!!!!!!!!!!!!!!!!!!".parse::<ConnectionId>().is_err());
        // The last character carries 4 unused bits: only the canonical spelling is accepted.
        let mut other = s.clone();
        let last = other.pop().unwrap();
        let alt = if last == 'A' { 'B' } else { 'A' };
        other.push(alt);
        if let Ok(parsed) = other.parse::<ConnectionId>() {
            assert_ne!(parsed, id);
        }
    }
}
