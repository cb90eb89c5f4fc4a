//! The two hashes the module writes: the applied-hash of each owned object, and the
//! config hash that rolls the pod.
//!
//! Both are XXH3 (64 and 128 bits): they detect change, they do not authenticate
//! anything, and they are computed on every reconcile of every DittoServer, so speed
//! matters more than collision resistance against an adversary. XXH3 is defined byte
//! for byte, so native, wasm and JavaScript builds agree.

mod encoding;

use serde::Serialize;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Hashes desired objects through a compact encoding of their JSON data model
/// ([`encoding`]).
///
/// The encoding is deterministic: struct fields come in declaration order and maps
/// are `BTreeMap`s. One buffer is reused for every object of a reconcile.
#[derive(Default)]
pub struct ObjectHasher {
    buffer: Vec<u8>,
}

impl ObjectHasher {
    /// A hasher with an empty buffer.
    pub fn new() -> Self {
        ObjectHasher { buffer: Vec::with_capacity(8 * 1024) }
    }

    /// The 64-bit hash of `object`'s encoding, as 16 hex digits.
    pub fn hash<T: Serialize + ?Sized>(&mut self, object: &T) -> Result<String, serde_json::Error> {
        self.buffer.clear();
        encoding::encode(object, &mut self.buffer)?;
        Ok(hex(xxh3_64(&self.buffer).into(), 16))
    }
}

/// The last `digits` hex digits of `value`, zero-padded (`format!("{:0digits$x}")`
/// without the formatting machinery, which shows in a call this short).
fn hex(value: u128, digits: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..digits).rev().map(|i| char::from(DIGITS[((value >> (4 * i)) & 0xf) as usize])).collect()
}

/// Builds the config hash from length-framed parts (so that `("a", "bc")` and
/// `("ab", "c")` differ).
pub struct ConfigHasher {
    state: Xxh3,
}

impl ConfigHasher {
    /// An empty hash.
    pub fn new() -> Self {
        ConfigHasher { state: Xxh3::new() }
    }

    /// Adds one part.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.state.update(&(bytes.len() as u64).to_le_bytes());
        self.state.update(bytes);
        self
    }

    /// The 128-bit hash of the parts so far, as 32 hex digits.
    pub fn finish(&self) -> String {
        hex(self.state.digest128(), 32)
    }
}

impl Default for ConfigHasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_hash_is_stable_and_sensitive() {
        let mut hasher = ObjectHasher::new();
        let a = hasher.hash(&serde_json::json!({"a": 1, "b": [1, 2]})).expect("hashes");
        // Key order of the input does not matter: maps are sorted.
        let b = hasher.hash(&serde_json::json!({"b": [1, 2], "a": 1})).expect("hashes");
        let c = hasher.hash(&serde_json::json!({"a": 1, "b": [2, 1]})).expect("hashes");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
        // Pinned: a change of the hash function would re-apply every object once.
        assert_eq!(hasher.hash("x").expect("hashes"), format!("{:016x}", xxh3_64(b"s\x01\0\0\0\0\0\0\0x")));
    }

    #[test]
    fn hex_is_zero_padded_lowercase() {
        assert_eq!(hex(0xab, 16), format!("{:016x}", 0xab));
        assert_eq!(hex(u128::MAX, 32), "f".repeat(32));
        assert_eq!(hex(0x1234_5678_9abc_def0_1122_3344_5566_7788, 32), "123456789abcdef01122334455667788");
    }

    #[test]
    fn config_hash_frames_its_parts() {
        let ab_c = ConfigHasher::new().part(b"ab").part(b"c").finish();
        let a_bc = ConfigHasher::new().part(b"a").part(b"bc").finish();
        assert_ne!(ab_c, a_bc);
        assert_eq!(ab_c, ConfigHasher::new().part(b"ab").part(b"c").finish());
        assert_eq!(ab_c.len(), 32);
    }
}
