//! The two hashes the module writes: the applied-hash of each owned object, and the
//! config hash that rolls the pod.
//!
//! Both are XXH3 (64 and 128 bits): they detect change, they do not authenticate
//! anything, and they are computed on every reconcile of every DittoServer, so speed
//! matters more than collision resistance against an adversary. XXH3 is defined byte
//! for byte, so native, wasm and JavaScript builds agree.

use serde::Serialize;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// The 64-bit hash of `object`'s JSON (as `serde_json` writes it), as 16 hex digits.
///
/// The JSON is deterministic: struct fields come in declaration order and maps are
/// sorted (`BTreeMap`, `serde_json::Map`). It is written into one buffer and hashed
/// in one pass: feeding the hasher each small piece the serializer writes costs more
/// than the buffer.
pub fn object_hash<T: Serialize + ?Sized>(object: &T) -> Result<String, serde_json::Error> {
    Ok(format!("{:016x}", xxh3_64(&serde_json::to_vec(object)?)))
}

/// Builds the config hash from length-framed parts (so that `("a", "bc")` and
/// `("ab", "c")` differ).
#[derive(Default)]
pub struct ConfigHasher {
    state: Xxh3Default,
}

impl ConfigHasher {
    /// An empty hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one part.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.state.update(&(bytes.len() as u64).to_le_bytes());
        self.state.update(bytes);
        self
    }

    /// The 128-bit hash of the parts so far, as 32 hex digits.
    pub fn finish(&self) -> String {
        format!("{:032x}", self.state.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

    #[test]
    fn object_hash_is_stable_and_sensitive() {
        let a = object_hash(&serde_json::json!({"a": 1, "b": [1, 2]})).expect("hashes");
        // Key order of the input does not matter: maps are sorted.
        let b = object_hash(&serde_json::json!({"b": [1, 2], "a": 1})).expect("hashes");
        let c = object_hash(&serde_json::json!({"a": 1, "b": [2, 1]})).expect("hashes");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, format!("{:016x}", xxh3_64(br#"{"a":1,"b":[1,2]}"#)));
        // Pinned: a change of the hash function would re-apply every object once.
        assert_eq!(object_hash("x").expect("hashes"), format!("{:016x}", xxh3_64(b"\"x\"")));
    }

    #[test]
    fn hex_is_zero_padded_lowercase() {
        assert_eq!(object_hash(&0).expect("hashes"), format!("{:016x}", xxh3_64(b"0")));
        // Unchanged by the move to streamed JSON: the config hash does not roll pods.
        let framed = [1u64.to_le_bytes().as_slice(), b"x"].concat();
        assert_eq!(ConfigHasher::new().part(b"x").finish(), format!("{:032x}", xxh3_128(&framed)));
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
