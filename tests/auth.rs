//! Who may call the APIs: tokens from an identity provider of the test's own (keys made with
//! `openssl`, their JWKS served over HTTP) and static tokens with scopes, against the real
//! services. Every refusal is checked for its status, its problem type and RFC 6750's
//! `WWW-Authenticate`.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use eventline_runtime::auth::{ApiAccess, JwtConfig};
use eventline_testkit::{TestEnv, http};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Response;
use serde_json::{Value, json};

const ISSUER: &str = "https://login.test.example/";
const AUDIENCE: &str = "eventline";

/// A signing key of the test's identity provider.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    /// A new key made by `openssl`: RSA 2048 for RS256, P-256 for ES256.
    fn new(kid: &str, algorithm: Algorithm) -> SigningKey {
        let args: &[&str] = match algorithm {
            Algorithm::RS256 => &["genrsa", "-traditional", "2048"],
            _ => &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        };
        let output = std::process::Command::new("openssl").args(args).output().unwrap();
        assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
        let encoding = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&output.stdout).unwrap(),
            _ => EncodingKey::from_ec_pem(&output.stdout).unwrap(),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        SigningKey { kid: kid.to_owned(), algorithm, encoding, jwk }
    }

    /// A token signed by this key, with `claims` over valid defaults (`null` removes one).
    fn token(&self, claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut body = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "client-7", "iat": now, "exp": now + 300, "scope": "read write",
        });
        for (name, value) in claims.as_object().unwrap() {
            match value {
                Value::Null => body.as_object_mut().unwrap().remove(name),
                value => body.as_object_mut().unwrap().insert(name.clone(), value.clone()),
            };
        }
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &body, &self.encoding).unwrap()
    }
}

/// The identity provider's JWKS endpoint: serves the keys it is told to, counts its fetches, and
/// can be made to fail.
#[derive(Clone)]
struct IdentityProvider {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    failing: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl IdentityProvider {
    async fn start(keys: &[&SigningKey]) -> IdentityProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider = IdentityProvider {
            url: format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap()),
            keys: Arc::default(),
            failing: Arc::default(),
            fetches: Arc::default(),
        };
        provider.publish(keys);
        let serving = provider.clone();
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let provider = serving.clone();
                async move {
                    provider.fetches.fetch_add(1, Ordering::SeqCst);
                    if provider.failing.load(Ordering::SeqCst) {
                        return Err(StatusCode::BAD_GATEWAY);
                    }
                    Ok(axum::Json(JwkSet { keys: provider.keys.lock().unwrap().clone() }))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        provider
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn jwt_config(&self) -> JwtConfig {
        JwtConfig {
            jwks_url: self.url.clone(),
            jwt_issuer: ISSUER.into(),
            jwt_audience: AUDIENCE.into(),
            ..Default::default()
        }
    }
}

fn access(jwt: JwtConfig, tokens: &str) -> ApiAccess {
    ApiAccess { api_tokens: tokens.parse().unwrap(), jwt, allow_unauthenticated: false }
}

async fn read(query: &support::Running, path: &str, token: Option<&str>) -> Response {
    let request = http().get(query.url(path));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap()
}

/// The status, problem type, detail and `WWW-Authenticate` of a refusal.
async fn refusal(response: Response) -> (u16, String, String, String) {
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let problem: Value = response.json().await.unwrap();
    let kind = problem["type"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    (status, kind, problem["detail"].as_str().unwrap().to_owned(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_tokens_are_checked_for_signature_issuer_audience_expiry_and_scope() {
    let env = TestEnv::new().await;
    let (rsa, ec) = (SigningKey::new("rsa-1", Algorithm::RS256), SigningKey::new("ec-1", Algorithm::ES256));
    let provider = IdentityProvider::start(&[&rsa, &ec]).await;
    let mut config = support::command_config(&env);
    config.access = access(provider.jwt_config(), "");
    let command = support::command_with(config).await;
    let _projector = support::projector(&env).await;
    let mut config = support::query_config(&env);
    config.access = access(provider.jwt_config(), "");
    let query = support::query_with(config).await;

    // A writer creates a user; a reader reads it back (RS256 and ES256 alike).
    let writer = rsa.token(json!({"scope": "write"}));
    let user = json!({"email": "jwt@example.com", "firstName": "Jay", "lastName": "Wt"});
    let created = http().post(command.url("/users")).bearer_auth(&writer).json(&user).send().await.unwrap();
    assert_eq!(created.status(), 202);
    let consistency = created.headers()["consistency-token"].to_str().unwrap().to_owned();
    let id = created.json::<Value>().await.unwrap()["userId"].as_str().unwrap().to_owned();
    let path = format!("/users/{id}");
    for key in [&rsa, &ec] {
        let reader = key.token(json!({"scope": "openid read"}));
        let answer = http()
            .get(query.url(&path))
            .bearer_auth(&reader)
            .header("consistency-token", &consistency)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{:?}", key.algorithm);
        assert_eq!(answer.json::<Value>().await.unwrap()["email"], "jwt@example.com");
    }

    // Without a token: 401 and a challenge without an error code (RFC 6750 §3.1).
    let (status, kind, _, challenge) = refusal(read(&query, &path, None).await).await;
    assert_eq!(
        (status, kind.as_str(), challenge.as_str()),
        (401, "unauthorized", r#"Bearer realm="eventline""#)
    );

    // Each bad token: 401 invalid_token, saying why.
    let now = chrono::Utc::now().timestamp();
    let stranger = SigningKey::new("stranger", Algorithm::RS256);
    let mut forged = rsa.token(json!({"scope": "read"}));
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let impostor = {
        // Signed by a key the provider does not list, under the id of one it does.
        let mut key = SigningKey::new("rsa-1", Algorithm::RS256);
        key.kid = rsa.kid.clone();
        key.token(json!({"scope": "read"}))
    };
    let cases = [
        ("expired", rsa.token(json!({"exp": now - 120})), "expired"),
        ("expired within the leeway", rsa.token(json!({"exp": now - 5, "scope": "read"})), ""),
        ("not yet valid", rsa.token(json!({"nbf": now + 600})), "not valid yet"),
        ("wrong audience", rsa.token(json!({"aud": "another-api"})), "(aud)"),
        ("wrong issuer", rsa.token(json!({"iss": "https://evil.example/"})), "(iss)"),
        ("no expiry", rsa.token(json!({"exp": null})), "required claim"),
        ("unknown key", stranger.token(json!({})), "unknown kid"),
        ("bad signature", forged, "signature"),
        ("another key's signature", impostor, "signature"),
        ("not a JWT", "not.a.jwt".to_owned(), "not a JWT"),
    ];
    for (case, token, why) in cases {
        let response = read(&query, &path, Some(&token)).await;
        if why.is_empty() {
            assert_eq!(response.status(), 200, "{case}");
            continue;
        }
        assert!(!response.status().is_success(), "{case}: let in");
        let (status, kind, detail, challenge) = refusal(response).await;
        assert_eq!((status, kind.as_str()), (401, "unauthorized"), "{case}: {detail}");
        assert!(detail.contains(why), "{case}: {detail}");
        assert!(challenge.contains(r#"error="invalid_token""#), "{case}: {challenge}");
    }
    // An unsigned token or an HMAC one signed with a public key is never accepted.
    let unsigned = {
        let header = base64url(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}));
        let body = base64url(&json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "scope": "read"}));
        format!("{header}.{body}.")
    };
    let public_key = serde_json::to_vec(&rsa.jwk).unwrap();
    let hmac = jsonwebtoken::encode(
        &Header { kid: Some(rsa.kid.clone()), ..Header::new(Algorithm::HS256) },
        &json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "scope": "read"}),
        &EncodingKey::from_secret(&public_key),
    )
    .unwrap();
    for token in [unsigned, hmac] {
        let (status, _, detail, _) = refusal(read(&query, &path, Some(&token)).await).await;
        assert_eq!(status, 401, "{detail}");
    }

    // A valid token without the scope: 403 naming it, on each API.
    let (status, kind, detail, challenge) =
        refusal(read(&query, &path, Some(&rsa.token(json!({"scope": "write"})))).await).await;
    assert_eq!((status, kind.as_str()), (403, "forbidden"));
    assert!(detail.contains("`read`"), "{detail}");
    assert_eq!(challenge, r#"Bearer realm="eventline", error="insufficient_scope", scope="read""#);
    let reader = rsa.token(json!({"scope": "read"}));
    let refused = http().post(command.url("/users")).bearer_auth(&reader).json(&user).send().await.unwrap();
    let (status, kind, detail, _) = refusal(refused).await;
    assert_eq!((status, kind.as_str()), (403, "forbidden"), "{detail}");
    assert!(detail.contains("`write`"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_and_a_withdrawn_one_refused() {
    let env = TestEnv::new().await;
    let (old, new) =
        (SigningKey::new("2026-11", Algorithm::RS256), SigningKey::new("2026-12", Algorithm::ES256));
    let provider = IdentityProvider::start(&[&old]).await;
    let mut config = support::query_config(&env);
    config.access = access(provider.jwt_config(), "");
    let query = support::query_with(config).await;
    let path = "/users/550e8400-e29b-41d4-a716-446655440000";
    let status = |token: String| {
        let query = &query;
        async move { read(query, path, Some(&token)).await.status().as_u16() }
    };
    // Let in (404: no such user), on the keys loaded at start.
    assert_eq!(status(old.token(json!({}))).await, 404);
    let fetched = provider.fetches.load(Ordering::SeqCst);

    // The provider rotates: the new key signs, the old one is withdrawn. A token of the new key
    // makes the service reload the keys once, without a restart.
    provider.publish(&[&new]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(status(new.token(json!({}))).await, 404, "the rotated key is picked up");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), fetched + 1, "one reload");
    assert_eq!(status(new.token(json!({}))).await, 404);
    assert_eq!(provider.fetches.load(Ordering::SeqCst), fetched + 1, "the keys are cached");
    assert_eq!(status(old.token(json!({}))).await, 401, "the withdrawn key is refused");

    // Made-up key ids do not flood the provider: at most one reload a second.
    let stranger = SigningKey::new("made-up", Algorithm::ES256);
    let before = provider.fetches.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(status(stranger.token(json!({}))).await, 401);
    }
    assert!(provider.fetches.load(Ordering::SeqCst) - before <= 2, "reloads are rate-limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_file_are_read_again_when_a_token_names_a_new_one() {
    let env = TestEnv::new().await;
    let (first, second) =
        (SigningKey::new("file-1", Algorithm::ES256), SigningKey::new("file-2", Algorithm::RS256));
    let file = std::env::temp_dir().join(format!("eventline-jwks-{}.json", env.id));
    let write = |keys: &[&SigningKey]| {
        let set = JwkSet { keys: keys.iter().map(|k| k.jwk.clone()).collect() };
        std::fs::write(&file, serde_json::to_vec(&set).unwrap()).unwrap();
    };
    write(&[&first]);
    let jwt = JwtConfig {
        jwks_file: Some(file.clone()),
        jwt_issuer: ISSUER.into(),
        jwt_audience: AUDIENCE.into(),
        ..Default::default()
    };
    let mut config = support::query_config(&env);
    config.access = access(jwt, "");
    let query = support::query_with(config).await;
    let path = "/users/550e8400-e29b-41d4-a716-446655440000";
    assert_eq!(read(&query, path, Some(&first.token(json!({})))).await.status(), 404);
    assert_eq!(read(&query, path, Some(&second.token(json!({})))).await.status(), 401);

    // The operator (or a sidecar) replaces the file: the next token of the new key reads it again.
    write(&[&first, &second]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(read(&query, path, Some(&second.token(json!({})))).await.status(), 404);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_identity_provider_is_a_503_until_it_answers_again() {
    let env = TestEnv::new().await;
    let key = SigningKey::new("k1", Algorithm::ES256);
    let provider = IdentityProvider::start(&[&key]).await;
    provider.failing.store(true, Ordering::SeqCst);
    let tokens = "ops:read:static-read-token-0123456789";
    let mut config = support::query_config(&env);
    config.access = access(provider.jwt_config(), tokens);
    // The service starts without the keys, rather than crash-looping while the provider is down.
    let query = support::query_with(config).await;
    let path = "/users/550e8400-e29b-41d4-a716-446655440000";
    let response = read(&query, path, Some(&key.token(json!({})))).await;
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()).as_deref(),
        Some("5")
    );
    let (status, kind, _, _) = refusal(response).await;
    assert_eq!((status, kind.as_str()), (503, "authentication-unavailable"));
    // Static tokens do not depend on the provider.
    assert_eq!(read(&query, path, Some("static-read-token-0123456789")).await.status(), 404);

    provider.failing.store(false, Ordering::SeqCst);
    eventline_testkit::eventually(std::time::Duration::from_secs(10), "the keys loaded", || async {
        (read(&query, path, Some(&key.token(json!({})))).await.status() == 404).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_carry_scopes_across_the_services_and_the_console() {
    let env = TestEnv::new().await;
    let tokens = "writer:write:writer-token-0123456789,reader:read:reader-token-0123456789,\
                  legacy-bare-token-0123456789";
    let mut config = support::command_config(&env);
    config.access = support::token_access(tokens);
    let command = support::command_with(config).await;
    let mut config = support::query_config(&env);
    config.access = support::token_access(tokens);
    let query = support::query_with(config).await;
    let key = SigningKey::new("console", Algorithm::ES256);
    let provider = IdentityProvider::start(&[&key]).await;
    let mut config = support::projector_config(&env, "auth");
    config.jwt = provider.jwt_config();
    let projector = support::projector_with(config).await;

    let user = json!({"email": "scopes@example.com", "firstName": "Sco", "lastName": "Pes"});
    let post = |token: &'static str| http().post(command.url("/users")).bearer_auth(token).json(&user).send();
    assert_eq!(post("reader-token-0123456789").await.unwrap().status(), 403);
    assert_eq!(post("writer-token-0123456789").await.unwrap().status(), 202);
    // A bare token keeps the service's own scope: writes on the command API, reads on the query API.
    assert_eq!(post("legacy-bare-token-0123456789").await.unwrap().status(), 409, "user-exists: let in");
    let path = "/users/550e8400-e29b-41d4-a716-446655440000";
    assert_eq!(read(&query, path, Some("writer-token-0123456789")).await.status(), 403);
    assert_eq!(read(&query, path, Some("reader-token-0123456789")).await.status(), 404);
    assert_eq!(read(&query, path, Some("legacy-bare-token-0123456789")).await.status(), 404);

    // The console takes the identity provider's tokens too: view looks, operate acts.
    let console = |token: String, action: bool| {
        let request = match action {
            true => http().post(projector.url("/console/api/verify")).json(&json!({})),
            false => http().get(projector.url("/console/api/dead-letters")),
        };
        async move { request.bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(console(key.token(json!({"scope": "view"})), false).await, 200);
    assert_eq!(console(key.token(json!({"scope": "view"})), true).await, 403);
    assert_eq!(console(key.token(json!({"scope": "read write"})), false).await, 403);
    assert_eq!(console(key.token(json!({"aud": "another"})), false).await, 401);
}

/// Serves `keys` as a JWKS over HTTPS, with the server certificate of `certificates` (signed by
/// its test CA); returns the URL.
async fn https_identity_provider(certificates: &crate::secure::Certificates, keys: &[&SigningKey]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read_pem = |name: &str| std::fs::read(certificates.path(name)).unwrap();
    let chain =
        rustls_pemfile::certs(&mut &read_pem("server.pem")[..]).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut &read_pem("server.key")[..]).unwrap().unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let body = serde_json::to_string(&JwkSet { keys: keys.iter().map(|k| k.jwk.clone()).collect() }).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/jwks.json", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                // One request per connection, answered whatever it asks: enough for a JWKS fetch.
                let Ok(mut stream) = acceptor.accept(connection).await else { return };
                let mut request = [0_u8; 4096];
                let _ = stream.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all((head + &body).as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_fetched_over_tls_trusting_the_configured_ca() {
    let env = TestEnv::new().await;
    let certificates =
        crate::secure::Certificates::make(&std::env::temp_dir().join(format!("eventline-jwks-{}", env.id)));
    let key = SigningKey::new("tls-1", Algorithm::ES256);
    let url = https_identity_provider(&certificates, &[&key]).await;
    let path = "/users/550e8400-e29b-41d4-a716-446655440000";
    let jwt = JwtConfig {
        jwks_url: url,
        jwt_issuer: ISSUER.into(),
        jwt_audience: AUDIENCE.into(),
        ..Default::default()
    };

    // Trusting the provider's CA: the token is checked and let in (404: no such user).
    let mut config = support::query_config(&env);
    config.access = access(JwtConfig { jwks_ca_file: Some(certificates.path("ca.pem")), ..jwt.clone() }, "");
    let query = support::query_with(config).await;
    assert_eq!(read(&query, path, Some(&key.token(json!({})))).await.status(), 404);

    // Trusting only the system's CAs, the provider's certificate is refused: no keys, 503.
    let mut config = support::query_config(&env);
    config.access = access(jwt.clone(), "");
    let untrusting = support::query_with(config).await;
    assert_eq!(read(&untrusting, path, Some(&key.token(json!({})))).await.status(), 503);

    // Keys in the clear from another host are refused at start-up.
    let mut config = support::query_config(&env);
    config.access = access(JwtConfig { jwks_url: "http://login.example.com/jwks.json".into(), ..jwt }, "");
    let error = eventline_query::Application::build(config).await.err().expect("refused").to_string();
    assert!(error.contains("https://"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_api_refuses_to_start_without_authentication_unless_asked() {
    let env = TestEnv::new().await;
    let mut config = support::query_config(&env);
    config.access.allow_unauthenticated = false;
    let error = eventline_query::Application::build(config).await.err().expect("refused").to_string();
    assert!(error.contains("EVENTLINE_API_TOKENS") && error.contains("EVENTLINE_JWKS_URL"), "{error}");
    assert!(error.contains("EVENTLINE_ALLOW_UNAUTHENTICATED"), "{error}");
}

fn base64url(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}
