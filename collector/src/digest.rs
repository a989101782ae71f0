//! Hashes, secrets and their text: SHA-256 (token hashes, fingerprints, idempotency keys),
//! random secrets (tokens, sessions, serial numbers) and lowercase hex. Used by the CA, the API
//! and the store's callers alike; one copy.

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The system's random generator failed (no entropy to give).
#[derive(Debug, thiserror::Error)]
#[error("the system's random generator gave nothing")]
pub struct NoRandomness;

/// `n` random bytes from the system's generator.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, NoRandomness> {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| NoRandomness)?;
    Ok(bytes)
}

/// `n` random bytes from the system's generator, in lowercase hex.
pub fn random_hex(n: usize) -> Result<String, NoRandomness> {
    Ok(hex(&random_bytes(n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_the_empty_string() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
