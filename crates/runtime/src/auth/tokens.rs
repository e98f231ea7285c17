//! Static bearer tokens, for local use and for clients without an identity provider. Each entry is
//! `<name>:<scopes>:<token>` (scopes joined by `+`), or a bare `<token>` that has the scopes the
//! service gives bare tokens (its own: `write` for commands, `read` for reads). Tokens are kept
//! only as digests and compared in constant time; neither a token nor its place in an error
//! message ever shows one.

use secrecy::{ExposeSecret as _, SecretString};

use super::{Principal, Scopes};
use crate::secrets::SecretDigests;

/// The tokens as configured, comma-separated, each entry held as a secret (wiped when dropped).
/// Parsing never fails, so that an error can never echo a secret: [`StaticTokens::resolve`]
/// validates and names a bad entry by its place.
#[derive(Clone, Default)]
pub struct StaticTokens(Vec<SecretString>);

impl std::str::FromStr for StaticTokens {
    type Err = std::convert::Infallible;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Ok(StaticTokens(
            list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(SecretString::from).collect(),
        ))
    }
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticTokens({} redacted)", self.0.len())
    }
}

/// Configured tokens, resolved: who each belongs to, and the digests to find them by.
#[derive(Default)]
pub struct TokenTable {
    principals: Vec<Principal>,
    digests: SecretDigests,
}

impl StaticTokens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The table of these tokens, bare ones given `bare_scopes` (a service without them refuses
    /// bare tokens), or why an entry is unusable.
    pub fn resolve(&self, bare_scopes: Scopes) -> Result<TokenTable, String> {
        let mut table = TokenTable::default();
        let mut secrets = Vec::new();
        for (place, entry) in self.0.iter().enumerate() {
            let bad = |why: &str| format!("token entry {} {why}", place + 1);
            let (name, scopes, secret) = match entry.expose_secret().splitn(3, ':').collect::<Vec<_>>()[..] {
                [name, scopes, secret] => {
                    let scopes = Scopes::parse(scopes).ok_or_else(|| {
                        bad("names a scope other than read, write, operate, view (or viewer, operator)")
                    })?;
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
                    {
                        return Err(bad(
                            "has an empty name or one with characters other than letters, digits and -_.@",
                        ));
                    }
                    (name.to_owned(), scopes, secret)
                }
                [secret] if !bare_scopes.is_empty() => (format!("token-{}", place + 1), bare_scopes, secret),
                _ => return Err(bad("is not <name>:<scopes>:<token>")),
            };
            if secret.len() < 16 {
                return Err(bad("has a token shorter than 16 characters"));
            }
            table.principals.push(Principal { name, scopes });
            secrets.push(secret);
        }
        table.digests = SecretDigests::new(secrets);
        Ok(table)
    }
}

impl TokenTable {
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whose token `presented` is.
    pub fn find(&self, presented: &str) -> Option<Principal> {
        self.digests.position(presented).and_then(|i| self.principals.get(i).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    fn tokens(list: &str) -> StaticTokens {
        list.parse().unwrap_or_default()
    }

    #[test]
    fn named_entries_carry_their_scopes_and_bare_ones_the_services() {
        let table = tokens("reader:read:reader-token-0123456789, bare-token-0123456789")
            .resolve(Scopes::of(&[Scope::Write]))
            .unwrap_or_else(|e| panic!("{e}"));
        let reader = table.find("reader-token-0123456789").unwrap_or_else(|| panic!("reader"));
        assert_eq!((reader.name.as_str(), reader.scopes), ("reader", Scopes::of(&[Scope::Read])));
        let bare = table.find("bare-token-0123456789").unwrap_or_else(|| panic!("bare"));
        assert_eq!((bare.name.as_str(), bare.scopes), ("token-2", Scopes::of(&[Scope::Write])));
        assert!(table.find("bare-token-012345678").is_none());
    }

    #[test]
    fn a_bad_entry_is_named_by_its_place_never_by_its_token() {
        for (list, why) in [
            ("a:operator:tiny-secret", "shorter than 16"),
            ("a:admin:long-enough-token-123", "scope other than"),
            ("a b:view:long-enough-token-123", "empty name or one"),
            ("bare-token-on-a-service-without-bare-scopes", "is not <name>"),
        ] {
            let error = tokens(list).resolve(Scopes::NONE).err().unwrap_or_default();
            assert!(error.contains("entry 1") && error.contains(why), "{error}");
            assert!(!error.contains("token-123") && !error.contains("tiny-secret"), "{error}");
        }
        assert_eq!(format!("{:?}", tokens("a:view:secret-secret-secret")), "StaticTokens(1 redacted)");
    }
}
