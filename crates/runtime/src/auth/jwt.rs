//! Tokens issued by an identity provider: JWTs signed with RS256 or ES256, checked against the
//! provider's JWKS (fetched from a URL or read from a file) for signature, issuer, audience, expiry
//! and not-before, with a small leeway for clock skew. Scopes come from a configurable claim.
//!
//! The keys are cached. A token signed by a key the cache does not hold makes the cache reload
//! (at most once a second, so that made-up key ids cannot flood the provider): a provider that
//! rotates its keys is followed without a restart. The cache also reloads every
//! `EVENTLINE_JWKS_REFRESH_SECS`, so a key the provider withdrew stops being accepted.
//!
//! Signatures and claims are checked by `jsonwebtoken` (its RustCrypto backend).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

use super::{Principal, Refusal, Scopes};

/// How an identity provider's tokens are checked. JWTs are accepted when a JWKS URL or file is set.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtConfig {
    /// The identity provider's JWKS (its signing keys) as an `https://` URL; turns on JWTs.
    #[arg(long, env = "EVENTLINE_JWKS_URL", default_value = "")]
    pub jwks_url: String,
    /// The identity provider's JWKS as a file, instead of a URL (re-read on an unknown key id).
    #[arg(long, env = "EVENTLINE_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the JWKS URL besides the system's: a provider behind a
    /// private CA.
    #[arg(long, env = "EVENTLINE_JWKS_CA_FILE")]
    pub jwks_ca_file: Option<PathBuf>,
    /// The issuer (`iss`) a token must name; required with JWTs.
    #[arg(long, env = "EVENTLINE_JWT_ISSUER", default_value = "")]
    pub jwt_issuer: String,
    /// The audience (`aud`) a token must name; required with JWTs.
    #[arg(long, env = "EVENTLINE_JWT_AUDIENCE", default_value = "")]
    pub jwt_audience: String,
    /// The claim holding a token's scopes (a space-separated string or an array; a dotted path
    /// such as `realm_access.roles` reaches into objects).
    #[arg(long, env = "EVENTLINE_JWT_SCOPE_CLAIM", default_value = "scope")]
    pub jwt_scope_claim: String,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "EVENTLINE_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// Seconds between reloads of the JWKS (an unknown key id reloads it at once).
    #[arg(long, env = "EVENTLINE_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,
}

/// No identity provider; the flags' defaults otherwise.
impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            jwks_url: String::new(),
            jwks_file: None,
            jwks_ca_file: None,
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            jwt_scope_claim: "scope".into(),
            jwt_leeway_secs: 30,
            jwks_refresh_secs: 300,
        }
    }
}

impl JwtConfig {
    pub fn enabled(&self) -> bool {
        !self.jwks_url.is_empty() || self.jwks_file.is_some()
    }
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    Url(reqwest::Url),
    File(PathBuf),
}

/// A key of the set, usable for one algorithm.
struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The cached key set.
struct Keys {
    by_id: HashMap<String, Arc<Key>>,
    loaded_at: Option<Instant>,
    tried_at: Option<Instant>,
}

/// Checks identity-provider tokens.
pub struct JwtVerifier {
    source: KeySource,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// One reload at a time; callers that wait for it then read what it loaded.
    reloading: tokio::sync::Mutex<()>,
    validation: HashMap<Algorithm, Validation>,
    scope_claim: Vec<String>,
}

/// Reloads prompted by unknown key ids are at least this far apart.
const RELOAD_COOLDOWN: Duration = Duration::from_secs(1);
/// How long a JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The algorithms accepted: asymmetric only, so that a public key can never be used as an HMAC
/// secret.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

impl JwtVerifier {
    /// A verifier for `config`, its keys loaded once (a provider that cannot be reached now is
    /// retried as tokens arrive: the service starts, and answers `503` until the keys load).
    pub async fn new(config: &JwtConfig) -> Result<Arc<JwtVerifier>, String> {
        let source = match (&config.jwks_file, config.jwks_url.as_str()) {
            (Some(_), url) if !url.is_empty() => {
                return Err("set EVENTLINE_JWKS_URL or EVENTLINE_JWKS_FILE, not both".into());
            }
            (Some(file), _) => KeySource::File(file.clone()),
            (None, url) => KeySource::Url(keys_url(url)?),
        };
        if config.jwt_issuer.is_empty() || config.jwt_audience.is_empty() {
            return Err("JWTs need EVENTLINE_JWT_ISSUER and EVENTLINE_JWT_AUDIENCE: a token is accepted \
                        only from that issuer and for that audience"
                .into());
        }
        let validation = ALGORITHMS
            .into_iter()
            .map(|algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.set_issuer(&[&config.jwt_issuer]);
                validation.set_audience(&[&config.jwt_audience]);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.validate_nbf = true;
                validation.leeway = config.jwt_leeway_secs;
                (algorithm, validation)
            })
            .collect();
        let http = http_client(config.jwks_ca_file.as_deref())?;
        let verifier = Arc::new(JwtVerifier {
            source,
            http,
            keys: RwLock::new(Keys { by_id: HashMap::new(), loaded_at: None, tried_at: None }),
            reloading: tokio::sync::Mutex::new(()),
            validation,
            scope_claim: config.jwt_scope_claim.split('.').map(str::to_owned).collect(),
        });
        verifier.reload().await;
        let refresh = Duration::from_secs(config.jwks_refresh_secs.max(1));
        tokio::spawn(keep_fresh(Arc::downgrade(&verifier), refresh));
        Ok(verifier)
    }

    /// Who `token` says the caller is, once its signature and claims check out.
    pub async fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("The token is not a JWT."))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("The token is signed with an algorithm other than RS256 or ES256."));
        }
        let key = self.key(header.kid.as_deref()).await?;
        if key.algorithm != header.alg {
            return Err(invalid("The token's algorithm is not its key's."));
        }
        let validation = self.validation.get(&header.alg).ok_or_else(|| invalid("Unsupported algorithm."))?;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, validation)
            .map_err(|error| invalid(rejection(error.kind())))?
            .claims;
        let name = claims.get("sub").and_then(Value::as_str).unwrap_or("jwt").to_owned();
        Ok(Principal { name, scopes: self.scopes(&claims) })
    }

    fn scopes(&self, claims: &serde_json::Map<String, Value>) -> Scopes {
        let mut path = self.scope_claim.iter();
        let first = path.next().and_then(|name| claims.get(name.as_str()));
        match path.fold(first, |value, name| value.and_then(|v| v.get(name.as_str()))) {
            Some(Value::String(list)) => Scopes::from_claimed(list.split_whitespace()),
            Some(Value::Array(items)) => Scopes::from_claimed(items.iter().filter_map(Value::as_str)),
            _ => Scopes::NONE,
        }
    }

    /// The key `kid` names (or the only key, for a token without one), reloading the set once
    /// when it is not known.
    async fn key(&self, kid: Option<&str>) -> Result<Arc<Key>, Refusal> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let loaded_before = self.loaded_at();
        {
            let _one_at_a_time = self.reloading.lock().await;
            // Another caller may have reloaded while this one waited.
            if self.loaded_at() == loaded_before && self.may_reload() {
                self.reload().await;
            }
        }
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if self.loaded_at().is_none() {
            return Err(Refusal::KeysUnavailable);
        }
        Err(invalid("The token is signed by a key the identity provider does not list (unknown kid)."))
    }

    fn cached(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        let keys = self.keys.read().ok()?;
        match kid {
            Some(kid) => keys.by_id.get(kid).cloned(),
            None if keys.by_id.len() == 1 => keys.by_id.values().next().cloned(),
            None => None,
        }
    }

    fn loaded_at(&self) -> Option<Instant> {
        self.keys.read().ok().and_then(|k| k.loaded_at)
    }

    fn may_reload(&self) -> bool {
        self.keys.read().ok().and_then(|k| k.tried_at).is_none_or(|at| at.elapsed() >= RELOAD_COOLDOWN)
    }

    /// Loads the key set; on failure the keys held so far stay in use.
    async fn reload(&self) {
        if let Ok(mut keys) = self.keys.write() {
            keys.tried_at = Some(Instant::now());
        }
        let fetched = self.fetch().await;
        crate::metrics::jwks_load(fetched.is_ok());
        match fetched {
            Ok(set) => {
                let by_id = usable_keys(&set);
                tracing::info!(keys = by_id.len(), source = ?self.source, "Loaded the identity provider's keys");
                if let Ok(mut keys) = self.keys.write() {
                    keys.by_id = by_id;
                    keys.loaded_at = Some(Instant::now());
                }
            }
            Err(error) => {
                tracing::warn!(%error, source = ?self.source, "Loading the identity provider's keys failed")
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let bytes = match &self.source {
            KeySource::File(path) => {
                tokio::fs::read(path).await.map_err(|e| format!("reading {}: {e}", path.display()))?
            }
            KeySource::Url(url) => {
                let response = self.http.get(url.clone()).send().await.map_err(|e| e.to_string())?;
                let response = response.error_for_status().map_err(|e| e.to_string())?;
                response.bytes().await.map_err(|e| e.to_string())?.to_vec()
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS: {e}"))
    }
}

/// The JWKS URL: `https://`, or `http://` to this host only (a key set fetched in the clear from
/// elsewhere could be replaced on the way, and with it every token's signature).
fn keys_url(url: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("EVENTLINE_JWKS_URL is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err("EVENTLINE_JWKS_URL must be an https:// URL (http:// only to this host)".into()),
    }
}

/// The client the keys are fetched with: the system's CAs, and those of `ca_file` if given.
fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(FETCH_TIMEOUT);
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("EVENTLINE_JWKS_CA_FILE ({}): {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!("EVENTLINE_JWKS_CA_FILE ({}) is not PEM certificates: {e}", path.display())
        })?;
        builder = certificates.into_iter().fold(builder, reqwest::ClientBuilder::add_root_certificate);
    }
    builder.build().map_err(|e| format!("creating the JWKS client: {e}"))
}

/// Reloads the keys every `every` while the verifier lives.
async fn keep_fresh(verifier: Weak<JwtVerifier>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(verifier) = verifier.upgrade() else { return };
        let _one_at_a_time = verifier.reloading.lock().await;
        verifier.reload().await;
    }
}

/// The signing keys of `set` this service can use, by key id. A key without an id is kept under
/// the empty id, for tokens without one.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<Key>> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let algorithm = key_algorithm(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((jwk.common.key_id.clone().unwrap_or_default(), Arc::new(Key { algorithm, key })))
        })
        .collect()
}

/// The algorithm a JWK is for: its `alg`, or else what its key type implies.
fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
        (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
        (Some(_), _) => return None,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
        (None, _) => return None,
    };
    Some(algorithm)
}

fn invalid(why: &'static str) -> Refusal {
    Refusal::InvalidToken(why)
}

/// Why `jsonwebtoken` refused a token, in words a client can act on.
fn rejection(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "The token has expired.",
        ErrorKind::ImmatureSignature => "The token is not valid yet (nbf).",
        ErrorKind::InvalidAudience => "The token is not for this API (aud).",
        ErrorKind::InvalidIssuer => "The token is not from the configured issuer (iss).",
        ErrorKind::InvalidSignature => "The token's signature does not verify.",
        ErrorKind::MissingRequiredClaim(_) => "The token lacks a required claim (exp, iss or aud).",
        ErrorKind::InvalidAlgorithm => "The token's algorithm does not match its key.",
        _ => "The token is malformed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fetched_over_https_or_from_this_host() {
        for ok in [
            "https://login.example.com/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]/k",
            "http://localhost/k",
        ] {
            assert!(keys_url(ok).is_ok(), "{ok}");
        }
        for refused in ["http://login.example.com/jwks.json", "ftp://127.0.0.1/k", "not a url"] {
            assert!(keys_url(refused).is_err(), "{refused}");
        }
    }
}
