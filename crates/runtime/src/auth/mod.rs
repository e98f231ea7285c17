//! Who may call an API, and what they may do: one access model for the three services.
//!
//! - **Scopes**: `read` (the query API, history, live streams), `write` (commands), `operate`
//!   (console actions), `view` (the console, read-only). Every route names the scope it needs.
//! - **Two kinds of bearer token.** Static tokens (`tokens`), each with its scopes, for local use
//!   and clients without an identity provider; and JWTs from an identity provider (`jwt`),
//!   checked against its JWKS, with scopes from a claim.
//! - **Refusals** are problem+json with RFC 6750's `WWW-Authenticate`: `401` without a usable
//!   token (`invalid_token` says why a token was refused), `403 insufficient_scope` naming the
//!   scope that was missing.
//! - **Unconfigured** means refused at start-up, unless unauthenticated local use is asked for
//!   explicitly (`EVENTLINE_ALLOW_UNAUTHENTICATED`): then every caller has every scope.

mod jwt;
pub mod openapi;
mod scopes;
mod tokens;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use jwt::JwtConfig;
pub use scopes::{Scope, Scopes};
pub use tokens::StaticTokens;

use crate::problem::Problem;
use crate::rate_limit::RateLimiter;
use crate::secrets::bearer;
use jwt::JwtVerifier;
use tokens::TokenTable;

crate::problem_types! {
    UNAUTHORIZED = (UNAUTHORIZED, "unauthorized", "Unauthorized");
    FORBIDDEN = (FORBIDDEN, "forbidden", "Forbidden");
    AUTHENTICATION_UNAVAILABLE =
        (SERVICE_UNAVAILABLE, "authentication-unavailable", "Authentication unavailable");
}

/// How the command and query APIs authenticate their callers.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiAccess {
    /// Static bearer tokens: comma-separated `<name>:<scopes>:<token>` entries (scopes joined by
    /// `+`: read, write, operate, view), tokens of 16 characters or more. A bare `<token>` has the
    /// service's own scope: `write` on the command API, `read` on the query API.
    #[arg(long, env = "EVENTLINE_API_TOKENS", hide_env_values = true, default_value = "")]
    pub api_tokens: StaticTokens,
    /// Tokens from an identity provider.
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// Let every caller in when neither tokens nor an identity provider are configured: for local
    /// use only (a warning is logged at start). Without any of them and without this, the service
    /// does not start.
    #[arg(
        long,
        env = "EVENTLINE_ALLOW_UNAUTHENTICATED",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub allow_unauthenticated: bool,
}

impl ApiAccess {
    /// The guard of an API whose routes all take `scope` (which bare tokens are given).
    pub async fn guard(&self, scope: Scope) -> anyhow::Result<Guard> {
        let authenticator = Authenticator::new(
            &self.api_tokens,
            "EVENTLINE_API_TOKENS",
            Scopes::of(&[scope]),
            &self.jwt,
            Unconfigured::unless_allowed(self.allow_unauthenticated),
        )
        .await?;
        Ok(Guard { authenticator, scope })
    }
}

/// A caller that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, or the JWT's subject; [`Principal::ANONYMOUS`] without authentication.
    pub name: String,
    pub scopes: Scopes,
}

impl Principal {
    /// The name of every caller of a service that lets everyone in.
    pub const ANONYMOUS: &str = "anonymous";

    /// Whether this caller was let in without authenticating (it is nobody in particular).
    pub fn is_anonymous(&self) -> bool {
        self.name == Principal::ANONYMOUS
    }
}

/// Why a caller was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token.
    Missing,
    /// A token that is not valid, and why (said to the client; never the token).
    InvalidToken(&'static str),
    /// The token is valid but lacks the scope.
    InsufficientScope { needed: Scope, held: Scopes },
    /// The identity provider's keys cannot be loaded, so no JWT can be checked now.
    KeysUnavailable,
}

/// What a service does when neither static tokens nor JWTs are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconfigured {
    /// Refuse to start (the command and query APIs, unless local use is asked for).
    Refuse,
    /// Let everyone in with every scope (`EVENTLINE_ALLOW_UNAUTHENTICATED`; logs a warning).
    Open,
    /// Let no one in (the console: nothing to sign in with).
    Closed,
}

impl Unconfigured {
    /// `Open` when unauthenticated use was asked for, else `Refuse`.
    pub fn unless_allowed(allow_unauthenticated: bool) -> Unconfigured {
        if allow_unauthenticated { Unconfigured::Open } else { Unconfigured::Refuse }
    }
}

/// Checks bearer tokens: static ones first, then JWTs when an identity provider is configured.
pub struct Authenticator {
    tokens: TokenTable,
    jwt: Option<Arc<JwtVerifier>>,
    open: bool,
}

impl Authenticator {
    /// The authenticator of `tokens` (named by `tokens_var` in errors; bare tokens get
    /// `bare_scopes`) and `jwt`, or why the configuration is unusable.
    pub async fn new(
        tokens: &StaticTokens,
        tokens_var: &str,
        bare_scopes: Scopes,
        jwt: &JwtConfig,
        unconfigured: Unconfigured,
    ) -> anyhow::Result<Arc<Authenticator>> {
        let tokens = tokens.resolve(bare_scopes).map_err(|why| anyhow::anyhow!("{tokens_var}: {why}"))?;
        let jwt = match jwt.enabled() {
            true => Some(JwtVerifier::new(jwt).await.map_err(anyhow::Error::msg)?),
            false => None,
        };
        let configured = !tokens.is_empty() || jwt.is_some();
        let open = !configured && unconfigured == Unconfigured::Open;
        if !configured && unconfigured == Unconfigured::Refuse {
            anyhow::bail!(
                "No authentication is configured: set {tokens_var} (bearer tokens) or EVENTLINE_JWKS_URL with \
                 EVENTLINE_JWT_ISSUER and EVENTLINE_JWT_AUDIENCE (an identity provider), or set \
                 EVENTLINE_ALLOW_UNAUTHENTICATED=true for local use"
            );
        }
        if open {
            tracing::warn!(
                "Accepting requests without authentication (EVENTLINE_ALLOW_UNAUTHENTICATED): for local use only"
            );
        }
        Ok(Arc::new(Authenticator { tokens, jwt, open }))
    }

    /// Whether anyone can be let in at all.
    pub fn configured(&self) -> bool {
        self.open || !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// Who presented `token` (a bearer token's value).
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal, Refusal> {
        if let Some(principal) = self.tokens.find(token) {
            return Ok(principal);
        }
        match &self.jwt {
            Some(jwt) if token.split('.').count() == 3 => jwt.verify(token).await,
            _ => Err(Refusal::InvalidToken("The bearer token is not valid.")),
        }
    }

    /// Who sent `headers`: the bearer token's owner, or `anonymous` with every scope when the
    /// service is open.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        if self.open {
            return Ok(Principal { name: Principal::ANONYMOUS.into(), scopes: Scopes::EVERY });
        }
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match bearer(authorization) {
            Some(token) if !token.is_empty() => self.authenticate_token(token).await,
            _ => Err(Refusal::Missing),
        }
    }

    /// Who sent `headers`, if they may do what takes `scope`.
    pub async fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<Principal, Refusal> {
        let principal = self.authenticate(headers).await.and_then(|principal| {
            if principal.scopes.contains(scope) {
                Ok(principal)
            } else {
                Err(Refusal::InsufficientScope { needed: scope, held: principal.scopes })
            }
        });
        if let Err(refusal) = &principal {
            crate::metrics::auth_refusal(refusal.reason());
        }
        principal
    }
}

/// The guard's state: who checks, and the scope the guarded routes need.
#[derive(Clone)]
pub struct Guard {
    pub authenticator: Arc<Authenticator>,
    pub scope: Scope,
}

/// Middleware letting in only callers with the guard's scope; the caller's [`Principal`] is put in
/// the request's extensions for what follows (rate limits, audit).
pub async fn require(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    match guard.authenticator.authorize(request.headers(), guard.scope).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// `router` behind the scope check and then each caller's rate limit.
pub fn guarded(router: axum::Router, guard: Guard, limiter: Arc<RateLimiter>) -> axum::Router {
    // The last layer added runs first: who the caller is must be known before their rate is.
    router
        .layer(axum::middleware::from_fn_with_state(limiter, crate::rate_limit::by_client))
        .layer(axum::middleware::from_fn_with_state(guard, require))
}

impl Refusal {
    /// The refusal's name in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::InsufficientScope { .. } => "insufficient_scope",
            Refusal::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The problem this refusal is answered with.
    pub fn problem(&self) -> Problem {
        match self {
            Refusal::Missing => Problem::new(UNAUTHORIZED, "Send `Authorization: Bearer <token>`."),
            Refusal::InvalidToken(why) => Problem::new(UNAUTHORIZED, *why),
            Refusal::InsufficientScope { needed, held } => Problem::new(
                FORBIDDEN,
                format!("This takes the `{needed}` scope; the token has: {held}."),
            ),
            Refusal::KeysUnavailable => Problem::new(
                AUTHENTICATION_UNAVAILABLE,
                "The identity provider's keys cannot be loaded now, so the token cannot be checked; retry shortly.",
            )
            .retry_after(5),
        }
    }

    /// RFC 6750's `WWW-Authenticate` challenge: no error code when no token was sent.
    pub fn challenge(&self) -> Option<HeaderValue> {
        let value = match self {
            Refusal::Missing => r#"Bearer realm="eventline""#.to_owned(),
            Refusal::InvalidToken(why) => {
                format!(r#"Bearer realm="eventline", error="invalid_token", error_description="{why}""#)
            }
            Refusal::InsufficientScope { needed, .. } => {
                format!(r#"Bearer realm="eventline", error="insufficient_scope", scope="{needed}""#)
            }
            Refusal::KeysUnavailable => return None,
        };
        HeaderValue::from_str(&value).ok()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn config() -> JwtConfig {
        JwtConfig::default()
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(authorization) {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    #[tokio::test]
    async fn static_tokens_carry_scopes_and_refusals_say_which_is_missing() {
        let tokens: StaticTokens = "reader:read:reader-token-0123456789".parse().unwrap_or_default();
        let auth = Authenticator::new(&tokens, "TOKENS", Scopes::NONE, &config(), Unconfigured::Refuse).await;
        let auth = auth.unwrap_or_else(|e| panic!("{e}"));
        let reader = auth.authorize(&headers("Bearer reader-token-0123456789"), Scope::Read).await;
        assert_eq!(reader.map(|p| p.name).ok().as_deref(), Some("reader"));
        let writing = auth.authorize(&headers("Bearer reader-token-0123456789"), Scope::Write).await;
        let refusal = writing.err().unwrap_or(Refusal::Missing);
        assert_eq!(
            refusal,
            Refusal::InsufficientScope { needed: Scope::Write, held: Scopes::of(&[Scope::Read]) }
        );
        assert_eq!(refusal.problem().status(), StatusCode::FORBIDDEN);
        let challenge = refusal.challenge().and_then(|v| v.to_str().ok().map(str::to_owned));
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="eventline", error="insufficient_scope", scope="write""#)
        );
        assert_eq!(auth.authorize(&HeaderMap::new(), Scope::Read).await.err(), Some(Refusal::Missing));
        assert!(matches!(
            auth.authorize(&headers("Bearer reader-token-012345678"), Scope::Read).await,
            Err(Refusal::InvalidToken(_))
        ));
    }

    #[tokio::test]
    async fn without_configuration_a_service_refuses_to_start_unless_asked_to_be_open() {
        let none = StaticTokens::default();
        let refused =
            Authenticator::new(&none, "TOKENS", Scopes::NONE, &config(), Unconfigured::Refuse).await;
        assert!(refused.err().is_some_and(|e| e.to_string().contains("EVENTLINE_ALLOW_UNAUTHENTICATED")));
        let open = Authenticator::new(&none, "TOKENS", Scopes::NONE, &config(), Unconfigured::Open).await;
        let open = open.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            open.authorize(&HeaderMap::new(), Scope::Operate).await.map(|p| p.scopes).ok(),
            Some(Scopes::EVERY)
        );
        let closed = Authenticator::new(&none, "TOKENS", Scopes::NONE, &config(), Unconfigured::Closed).await;
        assert!(!closed.unwrap_or_else(|e| panic!("{e}")).configured());
    }
}
