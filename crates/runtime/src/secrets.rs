//! Bearer secrets kept as SHA-256 digests and compared in constant time: the comparison's time
//! depends on neither a secret's length nor where a presented one differs, and no secret is kept
//! in memory as text.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// The digests of a list of secrets, in the order they were configured.
#[derive(Clone, Default)]
pub struct SecretDigests(Vec<[u8; 32]>);

impl SecretDigests {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        SecretDigests(secrets.into_iter().map(|s| Sha256::digest(s.as_bytes()).into()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The place in the list of the secret equal to `presented`. Every digest is compared,
    /// whatever matched, with no early exit.
    pub fn position(&self, presented: &str) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (i, known) in self.0.iter().enumerate() {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found
    }
}

impl std::fmt::Debug for SecretDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretDigests({} redacted)", self.0.len())
    }
}

/// The secret of an `Authorization: Bearer <secret>` value.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_an_equal_secret() {
        let digests = SecretDigests::new(["first-secret", "second-secret"]);
        assert_eq!(digests.position("second-secret"), Some(1));
        assert_eq!(digests.position("second-secre"), None);
        assert_eq!(format!("{digests:?}"), "SecretDigests(2 redacted)");
        assert_eq!(bearer(Some("Bearer abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
    }
}
