//! Who may use the console, and what they may do, enforced here on every endpoint (never only by
//! hiding a button):
//!
//! - **Tokens**: the shared access model (`eventline_runtime::auth`). Static tokens
//!   (`EVENTLINE_CONSOLE_TOKENS`, `<name>:<scopes>:<token>`) or the identity provider's JWTs; a
//!   token is never logged or echoed, and the audit records the name (a JWT's subject).
//! - **Roles** follow from scopes: `view` sees everything, payloads masked (the `viewer` role);
//!   `operate` may also act (redrive, discard, rebuild…; the `operator` role).
//!   `EVENTLINE_CONSOLE_READ_ONLY` refuses every action, whatever the role.
//! - **Two ways in.** A program sends `Authorization: Bearer <token>`. The page logs in once
//!   (`POST /console/api/session`) and then rides an HttpOnly, `SameSite=Strict` session cookie,
//!   which an `EventSource` sends too. Because a cookie is sent by the browser on its own, every
//!   action made with one must also carry the session's CSRF token in `X-CSRF-Token`, which only
//!   the page (same origin) can read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use eventline_runtime::auth::{self, Authenticator, Refusal, Scope};
use eventline_runtime::problem::{Problem, ProblemType};
use eventline_runtime::secrets::{SecretDigests, bearer};
use rand::Rng;
use serde::Serialize;
use std::sync::Arc;

use super::ConsoleState;

pub const UNAUTHORIZED: ProblemType =
    ProblemType::new(StatusCode::UNAUTHORIZED, "console-unauthorized", "Not signed in to the console");
pub const FORBIDDEN: ProblemType =
    ProblemType::new(StatusCode::FORBIDDEN, "console-forbidden", "Not allowed in the console");

/// The session cookie's name.
pub const COOKIE: &str = "eventline_console";
/// The header an action made with the session cookie must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; the oldest are dropped beyond.
const MAX_SESSIONS: usize = 1000;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything, payloads masked.
    Viewer,
    /// Also redrives, discards, rebuilds, switches, rolls back and verifies.
    Operator,
}

/// Who a token or session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// The console principal of `caller`: its role from its scopes, or why it has none.
    fn of(caller: auth::Principal) -> Result<Principal, Problem> {
        let role = if caller.scopes.contains(Scope::Operate) {
            Role::Operator
        } else if caller.scopes.contains(Scope::View) {
            Role::Viewer
        } else {
            return Err(Problem::new(
                FORBIDDEN,
                format!("The console takes the `view` or `operate` scope; the token has: {}.", caller.scopes),
            ));
        };
        Ok(Principal { name: caller.name, role })
    }
}

struct Session {
    principal: Principal,
    csrf: String,
    expires: Instant,
}

/// Tokens, sessions and the read-only switch.
pub struct Access {
    authenticator: Arc<Authenticator>,
    sessions: Mutex<HashMap<String, Session>>,
    pub read_only: bool,
}

/// A caller that proved who it is: by token (a program) or session cookie (the page).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The session's CSRF token when the caller came with the cookie.
    session_csrf: Option<String>,
}

impl Caller {
    /// The session's CSRF token, for a caller that came with the session cookie.
    pub fn csrf(&self) -> Option<&str> {
        self.session_csrf.as_deref()
    }
}

/// A new session, as the login answers it.
pub struct NewSession {
    pub principal: Principal,
    pub id: String,
    pub csrf: String,
}

impl Access {
    pub fn new(authenticator: Arc<Authenticator>, read_only: bool) -> Access {
        Access { authenticator, sessions: Mutex::new(HashMap::new()), read_only }
    }

    /// Whether anyone can sign in at all.
    pub fn configured(&self) -> bool {
        self.authenticator.configured()
    }

    async fn by_token(&self, token: &str) -> Result<Principal, Problem> {
        let caller = self.authenticator.authenticate_token(token).await.map_err(refused)?;
        Principal::of(caller)
    }

    /// Signs in with a token: a new session, or why not.
    pub async fn login(&self, token: &str) -> Result<NewSession, Problem> {
        let principal = self.by_token(token).await?;
        let (id, csrf) = (random_hex(), random_hex());
        let session = Session {
            principal: principal.clone(),
            csrf: csrf.clone(),
            expires: Instant::now() + SESSION_TTL,
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
            sessions.insert(id.clone(), session);
        }
        Ok(NewSession { principal, id, csrf })
    }

    /// Ends the session of `headers`' cookie, if any.
    pub fn logout(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut sessions)) = (session_cookie(headers), self.sessions.lock()) {
            sessions.remove(id);
        }
    }

    /// Who sent `headers`: a bearer token first, else the session cookie.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        if !self.configured() {
            return Err(Problem::new(
                UNAUTHORIZED,
                "No console tokens are configured: set EVENTLINE_CONSOLE_TOKENS (<name>:<scopes>:<token>,…) \
                 or an identity provider (EVENTLINE_JWKS_URL) on the projector.",
            ));
        }
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(token) = bearer(authorization) {
            let principal = self.by_token(token).await?;
            return Ok(Caller { principal, session_csrf: None });
        }
        let id = session_cookie(headers).ok_or_else(|| {
            Problem::new(
                UNAUTHORIZED,
                "Sign in (POST /console/api/session) or send `Authorization: Bearer <token>`.",
            )
        })?;
        let sessions = self.sessions.lock().map_err(|_| Problem::internal())?;
        match sessions.get(id) {
            Some(session) if session.expires > Instant::now() => {
                Ok(Caller { principal: session.principal.clone(), session_csrf: Some(session.csrf.clone()) })
            }
            _ => Err(Problem::new(UNAUTHORIZED, "The session has ended; sign in again.")),
        }
    }

    /// Whether `caller` may act (`what`, for the refusal): an operator, a console that is not
    /// read-only, and — with the session cookie — the session's CSRF token in `X-CSRF-Token`.
    pub fn may_act(&self, caller: &Caller, headers: &HeaderMap, what: &str) -> Result<(), Problem> {
        if self.read_only {
            return Err(Problem::new(
                FORBIDDEN,
                format!("The console is read-only (EVENTLINE_CONSOLE_READ_ONLY): it does not {what}."),
            ));
        }
        if caller.principal.role != Role::Operator {
            return Err(Problem::new(
                FORBIDDEN,
                format!(
                    "The {} role may look but not {what}: that takes the operator role.",
                    role_name(caller.principal.role)
                ),
            ));
        }
        if let Some(expected) = &caller.session_csrf {
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if SecretDigests::new([expected.as_str()]).position(sent).is_none() {
                return Err(Problem::new(
                    FORBIDDEN,
                    "An action made with the session cookie must carry the session's X-CSRF-Token header.",
                ));
            }
        }
        Ok(())
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
    }
}

/// The `Set-Cookie` value of a session (`None` ends it). Scoped to the console's paths; never
/// readable by scripts; never sent by another site's requests.
pub fn set_cookie(id: Option<&str>) -> HeaderValue {
    let value = match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A refusal of the shared model, as the console's problem: its own `401` type, the shared ones
/// otherwise.
fn refused(refusal: Refusal) -> Problem {
    eventline_runtime::metrics::auth_refusal(refusal.reason());
    match refusal {
        Refusal::Missing | Refusal::InvalidToken(_) => {
            let shared = refusal.problem();
            Problem::new(UNAUTHORIZED, shared.detail)
        }
        other => other.problem(),
    }
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every console endpoint but the page and the login takes a `Caller`: no way around it.
impl FromRequestParts<ConsoleState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        state.access.caller(&parts.headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn access(read_only: bool) -> Access {
        let tokens: auth::StaticTokens =
            "olga:operator:operator-token-0123456789,vic:viewer:viewer-token-0123456789,rita:read:reader-token-0123456789"
                .parse()
                .unwrap_or_default();
        let jwt = auth::JwtConfig::default();
        let authenticator =
            Authenticator::new(&tokens, "TOKENS", auth::Scopes::NONE, &jwt, auth::Unconfigured::Closed).await;
        Access::new(authenticator.unwrap_or_else(|e| panic!("{e}")), read_only)
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers
                .append(*name, HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("")));
        }
        headers
    }

    #[tokio::test]
    async fn a_viewer_may_look_and_only_an_operator_with_the_csrf_token_may_act() {
        let access = access(false).await;
        let viewer =
            access.caller(&headers(&[("authorization", "Bearer viewer-token-0123456789".into())])).await;
        let viewer = viewer.unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(viewer.principal.role, Role::Viewer);
        assert!(access.may_act(&viewer, &HeaderMap::new(), "redrive").is_err());

        let session = access.login("operator-token-0123456789").await.unwrap_or_else(|p| panic!("{p:?}"));
        let cookie = headers(&[("cookie", format!("other=1; {COOKIE}={}", session.id))]);
        let operator = access.caller(&cookie).await.unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(operator.principal.name, "olga");
        assert!(access.may_act(&operator, &cookie, "redrive").is_err(), "no CSRF token");
        let with_csrf =
            headers(&[("cookie", format!("{COOKIE}={}", session.id)), (CSRF_HEADER, session.csrf.clone())]);
        assert!(access.may_act(&operator, &with_csrf, "redrive").is_ok());

        access.logout(&cookie);
        assert!(access.caller(&cookie).await.is_err(), "the session ended");
        assert!(access.login("operator-token-012345678").await.is_err());
    }

    #[tokio::test]
    async fn a_token_without_a_console_scope_is_forbidden() {
        let access = access(false).await;
        let reader = access.login("reader-token-0123456789").await.err().map(|p| p.status());
        assert_eq!(reader, Some(StatusCode::FORBIDDEN));
    }

    #[tokio::test]
    async fn read_only_refuses_even_an_operator() {
        let access = access(true).await;
        let operator =
            access.caller(&headers(&[("authorization", "Bearer operator-token-0123456789".into())])).await;
        let operator = operator.unwrap_or_else(|p| panic!("{p:?}"));
        assert!(access.may_act(&operator, &HeaderMap::new(), "redrive").is_err());
    }
}
