//! Enrollment tokens, as the operator hands them to a field engineer:
//! `tly1.<secret>.<fingerprint>` — a one-time secret (64 hex digits) and the SHA-256 fingerprint
//! of the collector's CA certificate (64 hex digits), which the agent pins before it trusts the
//! collector. The collector keeps only a hash of the secret.

use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "tly1";

/// A parsed enrollment token. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// 64 lowercase hex digits.
    pub secret: String,
    /// SHA-256 of the CA certificate's DER, 64 lowercase hex digits.
    pub ca_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not an enrollment token (expected tly1.<64 hex digits>.<64 hex digits>, as `tally-collector site enroll-token` prints it)"
)]
pub struct BadToken;

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FromStr for EnrollToken {
    type Err = BadToken;
    fn from_str(s: &str) -> Result<Self, BadToken> {
        let mut parts = s.trim().split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(PREFIX), Some(secret), Some(fp), None) if is_hex64(secret) && is_hex64(fp) => {
                Ok(EnrollToken { secret: secret.to_owned(), ca_fingerprint: fp.to_owned() })
            }
            _ => Err(BadToken),
        }
    }
}

impl fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.secret, self.ca_fingerprint)
    }
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollToken")
            .field("secret", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let token = EnrollToken { secret: "a".repeat(64), ca_fingerprint: "0f".repeat(32) };
        let text = token.to_string();
        assert_eq!(text.parse::<EnrollToken>(), Ok(token.clone()));
        assert!(!format!("{token:?}").contains("aaaa"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let fp = "0f".repeat(32);
        for bad in [
            String::new(),
            format!("tly2.{}.{fp}", "a".repeat(64)),
            format!("tly1.{}.{fp}", "A".repeat(64)),
            format!("tly1.{}.{fp}", "a".repeat(63)),
            format!("tly1.{}.{fp}.x", "a".repeat(64)),
        ] {
            assert_eq!(bad.parse::<EnrollToken>(), Err(BadToken), "{bad}");
        }
    }
}
