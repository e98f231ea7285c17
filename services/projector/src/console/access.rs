//! Who may use the console, and what they may do, enforced here on every endpoint (never only by
//! hiding a button):
//!
//! - **Tokens** (`EVENTLINE_CONSOLE_TOKENS`, `<name>:<role>:<token>`) are kept as digests and
//!   compared in constant time; a token is never logged or echoed, and the audit records the name.
//! - **Roles**: a `viewer` sees everything, payloads masked; an `operator` may also act (redrive,
//!   discard, rebuild…). `EVENTLINE_CONSOLE_READ_ONLY` refuses every action, whatever the role.
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
use eventline_runtime::problem::{Problem, ProblemType};
use eventline_runtime::secrets::{SecretDigests, bearer};
use rand::Rng;
use serde::Serialize;

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

/// The console's tokens as configured. Parsing never fails, so that an error can never echo a
/// secret: [`ConsoleTokens::principals`] validates and names a bad entry by its place.
#[derive(Clone, Default)]
pub struct ConsoleTokens(Vec<String>);

impl std::str::FromStr for ConsoleTokens {
    type Err = std::convert::Infallible;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Ok(ConsoleTokens(
            list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect(),
        ))
    }
}

impl std::fmt::Debug for ConsoleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsoleTokens({} redacted)", self.0.len())
    }
}

/// Who a token or session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl ConsoleTokens {
    /// The principals and their tokens' digests, or why an entry is unusable.
    pub fn principals(&self) -> Result<(Vec<Principal>, SecretDigests), String> {
        let mut principals = Vec::new();
        let mut secrets = Vec::new();
        for (place, entry) in self.0.iter().enumerate() {
            let bad = |why: &str| format!("console token entry {} {why}", place + 1);
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("is not <name>:<role>:<token>"));
            };
            let role = match role {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                _ => return Err(bad("has a role other than viewer or operator")),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
                return Err(bad(
                    "has an empty name or one with characters other than letters, digits and -_.@",
                ));
            }
            if secret.len() < 16 {
                return Err(bad("has a token shorter than 16 characters"));
            }
            principals.push(Principal { name: name.to_owned(), role });
            secrets.push(secret);
        }
        Ok((principals, SecretDigests::new(secrets)))
    }
}

struct Session {
    principal: Principal,
    csrf: String,
    expires: Instant,
}

/// Tokens, sessions and the read-only switch.
pub struct Access {
    principals: Vec<Principal>,
    digests: SecretDigests,
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
    pub fn new(tokens: &ConsoleTokens, read_only: bool) -> Result<Access, String> {
        let (principals, digests) = tokens.principals()?;
        Ok(Access { principals, digests, sessions: Mutex::new(HashMap::new()), read_only })
    }

    /// Whether anyone can sign in at all.
    pub fn configured(&self) -> bool {
        !self.digests.is_empty()
    }

    fn by_token(&self, token: &str) -> Option<Principal> {
        self.digests.position(token).and_then(|i| self.principals.get(i).cloned())
    }

    /// Signs in with a token: a new session, or `None` for an unknown token.
    pub fn login(&self, token: &str) -> Option<NewSession> {
        let principal = self.by_token(token)?;
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
        Some(NewSession { principal, id, csrf })
    }

    /// Ends the session of `headers`' cookie, if any.
    pub fn logout(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut sessions)) = (session_cookie(headers), self.sessions.lock()) {
            sessions.remove(id);
        }
    }

    /// Who sent `headers`: a bearer token first, else the session cookie.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        if !self.configured() {
            return Err(Problem::new(
                UNAUTHORIZED,
                "No console tokens are configured: set EVENTLINE_CONSOLE_TOKENS (<name>:<role>:<token>,…) on the projector.",
            ));
        }
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(token) = bearer(authorization) {
            let principal = self
                .by_token(token)
                .ok_or_else(|| Problem::new(UNAUTHORIZED, "The bearer token is not valid."))?;
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

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every console endpoint but the page and the login takes a `Caller`: no way around it.
impl FromRequestParts<ConsoleState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        state.access.caller(&parts.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(read_only: bool) -> Access {
        let tokens: ConsoleTokens =
            "olga:operator:operator-token-0123456789,vic:viewer:viewer-token-0123456789"
                .parse()
                .unwrap_or_default();
        Access::new(&tokens, read_only).unwrap_or_else(|e| panic!("{e}"))
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers
                .append(*name, HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("")));
        }
        headers
    }

    #[test]
    fn a_bad_entry_is_named_by_its_place_never_by_its_token() {
        for (list, why) in [
            ("a:operator:tiny-secret", "shorter than 16"),
            ("a:admin:long-enough-token-123", "role other than"),
            ("no-colons-here-at-all", "is not <name>"),
            ("a b:viewer:long-enough-token-123", "empty name or one"),
        ] {
            let tokens: ConsoleTokens = list.parse().unwrap_or_default();
            let error = tokens.principals().err().unwrap_or_default();
            assert!(error.contains("entry 1") && error.contains(why), "{error}");
            assert!(!error.contains("token-123") && !error.contains("tiny-secret"), "{error}");
        }
        let tokens: ConsoleTokens = "a:viewer:secret-secret-secret".parse().unwrap_or_default();
        assert_eq!(format!("{tokens:?}"), "ConsoleTokens(1 redacted)");
    }

    #[test]
    fn a_viewer_may_look_and_only_an_operator_with_the_csrf_token_may_act() {
        let access = access(false);
        let viewer = access.caller(&headers(&[("authorization", "Bearer viewer-token-0123456789".into())]));
        let viewer = viewer.unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(viewer.principal.role, Role::Viewer);
        assert!(access.may_act(&viewer, &HeaderMap::new(), "redrive").is_err());

        let session = access.login("operator-token-0123456789").unwrap_or_else(|| panic!("login"));
        let cookie = headers(&[("cookie", format!("other=1; {COOKIE}={}", session.id))]);
        let operator = access.caller(&cookie).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(operator.principal.name, "olga");
        assert!(access.may_act(&operator, &cookie, "redrive").is_err(), "no CSRF token");
        let with_csrf =
            headers(&[("cookie", format!("{COOKIE}={}", session.id)), (CSRF_HEADER, session.csrf.clone())]);
        assert!(access.may_act(&operator, &with_csrf, "redrive").is_ok());

        access.logout(&cookie);
        assert!(access.caller(&cookie).is_err(), "the session ended");
        assert!(access.login("operator-token-012345678").is_none());
    }

    #[test]
    fn read_only_refuses_even_an_operator() {
        let access = access(true);
        let operator =
            access.caller(&headers(&[("authorization", "Bearer operator-token-0123456789".into())]));
        let operator = operator.unwrap_or_else(|p| panic!("{p:?}"));
        assert!(access.may_act(&operator, &HeaderMap::new(), "redrive").is_err());
    }
}
