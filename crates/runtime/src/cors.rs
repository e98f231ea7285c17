//! Which browser origins may call an API (CORS), as the operator configures it; tower-http's
//! `CorsLayer` speaks the protocol (preflights, `Vary`).
//!
//! None by default: without a configured origin no CORS header is sent, and a page on another
//! origin cannot read the answers. Origins are matched exactly; `*` is refused, so an API is
//! never opened to every site by a slip of configuration. Methods and headers default to the ones
//! the API itself serves and reads.

use std::str::FromStr;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default, clap::Args)]
pub struct CorsConfig {
    /// Browser origins allowed to call the API (CORS), comma-separated, each
    /// `scheme://host[:port]` and matched exactly; empty allows none.
    #[arg(long = "cors-allowed-origins", env = "EVENTLINE_CORS_ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: List<Origin>,
    /// Methods those origins may use, comma-separated; empty: the API's own.
    #[arg(long = "cors-allowed-methods", env = "EVENTLINE_CORS_ALLOWED_METHODS", default_value = "")]
    pub allowed_methods: List<Method>,
    /// Request headers those origins may send, comma-separated; empty: the ones the API reads.
    #[arg(long = "cors-allowed-headers", env = "EVENTLINE_CORS_ALLOWED_HEADERS", default_value = "")]
    pub allowed_headers: List<HeaderName>,
}

/// What an API serves and reads, the defaults of its CORS configuration, and the answer headers
/// a page may read.
pub struct ApiCors {
    pub methods: &'static [Method],
    pub headers: &'static [&'static str],
    pub exposed: &'static [&'static str],
}

impl CorsConfig {
    /// The layer answering preflights and marking answers for the configured origins; `None`
    /// when no origin is configured.
    pub fn layer(&self, api: &ApiCors) -> Option<CorsLayer> {
        if self.allowed_origins.0.is_empty() {
            return None;
        }
        let origins = self.allowed_origins.0.iter().map(|origin| origin.0.clone());
        let methods = if self.allowed_methods.0.is_empty() {
            api.methods.to_vec()
        } else {
            self.allowed_methods.0.clone()
        };
        let headers = if self.allowed_headers.0.is_empty() {
            api.headers.iter().map(|name| HeaderName::from_static(name)).collect()
        } else {
            self.allowed_headers.0.clone()
        };
        let exposed: Vec<HeaderName> = api.exposed.iter().map(|name| HeaderName::from_static(name)).collect();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods(methods)
                .allow_headers(headers)
                .expose_headers(exposed)
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

/// A comma-separated list of `T`; blanks between commas are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

/// An entry of a [`List`]; its error says what is wrong without repeating it.
pub trait Item: Sized {
    fn parse(text: &str) -> Result<Self, String>;
}

impl<T: Item> FromStr for List<T> {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        // Errors name an entry by its place, never by its text (configuration errors never echo
        // values, which can be secrets elsewhere).
        let items = list.split(',').map(str::trim).filter(|item| !item.is_empty());
        let parsed = items
            .enumerate()
            .map(|(place, item)| T::parse(item).map_err(|why| format!("entry {} {why}", place + 1)));
        parsed.collect::<Result<_, _>>().map(List)
    }
}

/// A web origin, `scheme://host[:port]`, as a browser sends it in `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(HeaderValue);

impl Item for Origin {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Err("is a wildcard, which would allow every site; list the origins instead".to_owned());
        }
        let uri: axum::http::Uri = text.parse().map_err(|_| "is not a URL".to_owned())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("must start with http:// or https://".to_owned());
        }
        if uri.host().is_none_or(str::is_empty) || !matches!(uri.path(), "" | "/") || text.ends_with('/') {
            return Err("must be scheme://host[:port], with no path or trailing slash".to_owned());
        }
        HeaderValue::from_str(text).map(Origin).map_err(|_| "is not a valid header value".to_owned())
    }
}

impl Item for Method {
    fn parse(text: &str) -> Result<Self, String> {
        Method::from_str(&text.to_ascii_uppercase()).map_err(|_| "is not an HTTP method".to_owned())
    }
}

impl Item for HeaderName {
    fn parse(text: &str) -> Result<Self, String> {
        HeaderName::from_str(text).map_err(|_| "is not a header name".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact_and_never_everyone() {
        let list: List<Origin> = "https://app.example.com, http://127.0.0.1:3000".parse().unwrap_or_default();
        assert_eq!(list.0.len(), 2);
        for bad in
            ["*", "app.example.com", "https://app.example.com/", "https://app.example.com/x", "ftp://a.b"]
        {
            assert!(bad.parse::<List<Origin>>().is_err(), "{bad} was accepted");
        }
        assert_eq!("".parse::<List<Origin>>(), Ok(List(Vec::new())));
    }

    #[test]
    fn no_origin_no_layer() {
        let api = ApiCors { methods: &[Method::GET], headers: &["authorization"], exposed: &["etag"] };
        assert!(CorsConfig::default().layer(&api).is_none());
        let config = CorsConfig {
            allowed_origins: "https://a.example".parse().unwrap_or_default(),
            ..Default::default()
        };
        assert!(config.layer(&api).is_some());
    }
}
