//! Short link ids: the keyed derivation of DESIGN §2 and the `LinkId` type that can
//! only hold valid base62 of an allowed length.
//!
//! Ids are keyed (HMAC) so nobody can compute the id of a URL they merely guess; the
//! key lives in the store so every replica derives the same ids.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::canon::CanonicalUrl;

/// Length of a fresh id; longer prefixes are used only on a collision.
pub const MIN_LEN: usize = 10;
/// A u128 in base62 needs at most 22 characters: the longest id there can be.
pub const MAX_LEN: usize = 22;

/// The 32-byte key that makes ids unguessable.
#[derive(Clone)]
pub struct IdKey {
    bytes: [u8; 32],
    /// The HMAC with the key already absorbed: every id derivation clones it instead
    /// of hashing the key's two padded blocks again (two of the four SHA-256 blocks a
    /// typical URL costs).
    keyed: Hmac<Sha256>,
}

impl PartialEq for IdKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for IdKey {}

impl IdKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // Invariant: HMAC accepts keys of any length, so this cannot fail.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes)
            .expect("HMAC takes keys of any length");
        Self { bytes, keyed }
    }

    pub fn random() -> Self {
        Self::from_bytes(rand::random())
    }

    /// Parses the 64-hex-digit form used by `--id-key` and by stores that keep text.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self::from_bytes(out))
    }

    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The full 22-character base62 form of the keyed hash; ids are its prefixes.
    pub fn derive(&self, url: &CanonicalUrl) -> FullId {
        let mut mac = self.keyed.clone();
        mac.update(url.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        let encoded = base62::encode(u128::from_be_bytes(first));
        // Left-pad so that every id has the same alphabet positions whatever the value.
        FullId(format!("{encoded:0>MAX_LEN$}"))
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(..)")
    }
}

/// All 22 characters of a derived id; the store picks the shortest free prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullId(String);

impl FullId {
    /// The candidate ids in the order the store tries them: 10, 11, ... 22 characters.
    pub fn candidates(&self) -> impl Iterator<Item = LinkId> + '_ {
        (MIN_LEN..=MAX_LEN).map(|n| LinkId(self.0[..n].to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A link id: base62, 10 to 22 characters. Built only by `parse` or by derivation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(String);

impl LinkId {
    /// Checks syntax before any lookup, so hostile ids never reach the store.
    pub fn parse(s: &str) -> Option<Self> {
        let ok =
            (MIN_LEN..=MAX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parsed like any other id: a stored or received trace cannot carry a bad one.
impl<'de> serde::Deserialize<'de> for LinkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LinkId::parse(&s).ok_or_else(|| serde::de::Error::custom("not a link id"))
    }
}

impl serde::Serialize for LinkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> CanonicalUrl {
        CanonicalUrl::parse(s).unwrap()
    }

    #[test]
    fn derivation_is_stable_and_keyed() {
        let k1 = IdKey::from_bytes([1; 32]);
        let k2 = IdKey::from_bytes([2; 32]);
        let u = url("https://cdn.example.com/a.jpg?sig=1");
        assert_eq!(k1.derive(&u), k1.derive(&u));
        assert_ne!(k1.derive(&u), k2.derive(&u));
        assert_eq!(k1.derive(&u).as_str().len(), MAX_LEN);
    }

    #[test]
    fn candidates_grow_from_ten_to_twenty_two() {
        let full = IdKey::from_bytes([7; 32]).derive(&url("https://a.example/x.png"));
        let lens: Vec<usize> = full.candidates().map(|c| c.as_str().len()).collect();
        assert_eq!(lens, (10..=22).collect::<Vec<_>>());
        assert!(
            full.candidates()
                .all(|c| full.as_str().starts_with(c.as_str()))
        );
    }

    #[test]
    fn link_id_syntax() {
        assert!(LinkId::parse("k3J9aQ2mZx").is_some());
        assert!(LinkId::parse("k3J9aQ2mZ").is_none(), "too short");
        assert!(LinkId::parse(&"a".repeat(23)).is_none(), "too long");
        assert!(LinkId::parse("..%2F..%2Fe").is_none(), "traversal");
        assert!(LinkId::parse("k3J9aQ2mZ-").is_none());
        assert!(LinkId::parse("k3J9aQ2mZé").is_none());
    }

    #[test]
    fn id_key_hex_round_trip() {
        let k = IdKey::random();
        assert_eq!(IdKey::from_hex(&k.to_hex()), Some(k));
        assert!(IdKey::from_hex("zz").is_none());
        assert!(IdKey::from_hex(&"g".repeat(64)).is_none());
    }
}
