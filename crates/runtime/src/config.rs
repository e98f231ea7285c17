//! Configuration pieces every service shares, read from the environment (or flags).

use clap::Args;

/// Where the event log is.
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The event topic (the log).
    #[arg(long = "topic", env = "EVENTLINE_TOPIC", default_value = "eventline.events")]
    pub topic: String,
    /// Partitions of the event topic when a service has to create it.
    #[arg(long = "topic-partitions", env = "EVENTLINE_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Replication factor of the event topic when a service has to create it.
    #[arg(long = "topic-replication", env = "EVENTLINE_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,
    /// Create the topic when it is missing. Turn off where the operator manages topics and the
    /// clients' ACLs deny CreateTopics: the services then only wait for the topic to exist. Either
    /// way a topic whose settings delete or compact history is refused (where the ACLs deny
    /// DescribeConfigs, the services say they cannot check, at start-up and in `/readyz`).
    #[arg(
        long = "manage-topic",
        env = "EVENTLINE_MANAGE_TOPIC",
        default_value_t = true,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub manage_topic: bool,
    /// Seconds between checks of the topic's settings while running: a topic altered to delete
    /// or compact history turns `/readyz` false.
    #[arg(long = "topic-check-secs", env = "EVENTLINE_TOPIC_CHECK_SECS", default_value_t = 30)]
    pub topic_check_secs: u64,
    #[command(flatten)]
    pub security: KafkaSecurity,
}

impl KafkaConfig {
    /// The same log's settings with another bootstrap list (a test's or a tool's own broker).
    pub fn with_brokers(&self, brokers: &str) -> KafkaConfig {
        KafkaConfig { brokers: brokers.to_owned(), ..self.clone() }
    }
}

/// How clients encrypt and authenticate their connections to the brokers, named as librdkafka
/// and every other Kafka client name them. The hand-written metadata client of `log_identity`
/// honours the same settings.
#[derive(Debug, Clone, Default, Args)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[arg(long = "kafka-security-protocol", env = "KAFKA_SECURITY_PROTOCOL", value_enum, default_value_t)]
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with a `sasl_*` protocol.
    #[arg(long = "kafka-sasl-mechanism", env = "KAFKA_SASL_MECHANISM", value_enum)]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[arg(long = "kafka-sasl-username", env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// Never logged or shown.
    #[arg(long = "kafka-sasl-password", env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA that signed the brokers' certificates (default: the system's CAs).
    #[arg(long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<std::path::PathBuf>,
    /// PEM client certificate, for brokers that require mutual TLS.
    #[arg(long = "kafka-ssl-certificate-location", env = "KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<std::path::PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long = "kafka-ssl-key-location", env = "KAFKA_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<std::path::PathBuf>,
    /// A file of further librdkafka properties, `key=value` per line (`#` starts a comment),
    /// applied after every other setting: any client property the variables above do not name.
    #[arg(long = "kafka-client-properties", env = "KAFKA_CLIENT_PROPERTIES", value_parser = ClientProperties::load)]
    pub client_properties: Option<ClientProperties>,
}

/// librdkafka properties read from a file at start-up. Values may be secrets: `Debug` shows keys.
#[derive(Clone, Default)]
pub struct ClientProperties(pub Vec<(String, String)>);

impl ClientProperties {
    /// Reads `key=value` lines; blank lines and `#` comments are skipped.
    pub fn load(path: &str) -> Result<ClientProperties, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        ClientProperties::parse(&text).map_err(|line| format!("{path}, line {line}: expected key=value"))
    }

    /// The properties of a file's text, or the number of the first line that is not one.
    pub fn parse(text: &str) -> Result<ClientProperties, usize> {
        let mut properties = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    properties.push((key.trim().to_owned(), value.trim().to_owned()))
                }
                _ => return Err(number + 1),
            }
        }
        Ok(ClientProperties(properties))
    }
}

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(key, _)| key)).finish()
    }
}

impl KafkaSecurity {
    pub fn uses_tls(&self) -> bool {
        matches!(self.protocol, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(&self) -> bool {
        matches!(self.protocol, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    /// What is missing or contradictory, checked at start-up so a service fails fast and says so.
    pub fn check(&self) -> Result<(), String> {
        if self.uses_sasl() {
            if self.sasl_mechanism.is_none() {
                return Err(format!("KAFKA_SECURITY_PROTOCOL={} needs KAFKA_SASL_MECHANISM", self.protocol));
            }
            if self.sasl_username.is_none() || self.sasl_password.is_none() {
                return Err("SASL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD".to_owned());
            }
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(
                "a client certificate needs both KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The name librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kafka's `sasl.mechanism`s that need nothing beyond a username and a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name the protocol (and librdkafka) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A secret setting: `secrecy`'s string, shown as redacted by `Debug`, read only through
/// `expose_secret`, and wiped from memory when dropped.
pub type Secret = secrecy::SecretString;

/// Where the read models are.
#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/eventline"
    )]
    pub url: String,
    /// Largest number of pooled connections.
    #[arg(long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: u32,
}

/// Where Redis is, and how to reach it over TLS (`rediss://`).
#[derive(Clone, Args)]
pub struct RedisConfig {
    /// Redis connection URL (`rediss://` for TLS).
    #[arg(id = "redis_url", long = "redis-url", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
    /// PEM file of the CA that signed the server's certificate, for `rediss://` (default: the
    /// system's CAs).
    #[arg(long = "redis-ca-cert", env = "REDIS_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for a server that requires mutual TLS.
    #[arg(long = "redis-client-cert", env = "REDIS_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    #[arg(id = "client_key", long = "redis-client-key", env = "REDIS_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
}

/// The URL's password is a secret: `Debug` shows the URL without it.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &without_password(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// As [`DatabaseConfig`]'s.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &without_password(&self.url))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

/// `url` with the password of its user info (`scheme://user:password@host…`) shown as `***`.
pub fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let authority_end = url[scheme_end..].find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else { return url.to_owned() };
    let Some(colon) = authority[..at].find(':') else { return url.to_owned() };
    format!("{}{}:***{}", &url[..scheme_end], &authority[..colon], &url[scheme_end + at..])
}

impl RedisConfig {
    /// Plain Redis at `url`, with no TLS settings.
    pub fn at(url: impl Into<String>) -> RedisConfig {
        RedisConfig { url: url.into(), ca_cert: None, client_cert: None, client_key: None }
    }
}

/// Reads the command line and the environment like `Parser::parse`, except that a bad value is
/// reported by its environment variable and flag and never echoed: values can be secrets (a
/// database URL with a password, a token). Help and other errors are clap's own.
pub fn parse<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(parsed) => parsed,
        Err(error) => exit_naming_the_variable(error, &P::command()),
    }
}

#[allow(clippy::print_stderr)]
fn exit_naming_the_variable(error: clap::Error, command: &clap::Command) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        error.exit()
    }
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => text.clone(),
        _ => String::new(),
    };
    // "--rate-limit-per-s <RATE_LIMIT_PER_S>" → "rate-limit-per-s"
    let flag = context(ContextKind::InvalidArg);
    let long = flag.trim_start_matches('-').split([' ', '=']).next().unwrap_or_default().to_owned();
    let value = context(ContextKind::InvalidValue);
    let name = match env_of(command, &long) {
        Some(variable) => format!("{variable} (--{long})"),
        None => format!("--{long}"),
    };
    let reason = std::error::Error::source(&error)
        .map(ToString::to_string)
        .filter(|reason| value.is_empty() || !reason.contains(&value))
        .unwrap_or_else(|| "not an accepted value".to_owned());
    eprintln!("error: invalid value for {name}: {reason} (the value is not shown; it may be a secret)");
    std::process::exit(2)
}

/// The environment variable of the argument `--long`, in the command or any subcommand.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|variable| variable.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn client_properties_are_key_value_lines_and_a_bad_line_is_named() {
        let text = "# a comment\n\nsasl.oauthbearer.config = scope=read\nssl.endpoint.identification.algorithm=none\n";
        let properties = ClientProperties::parse(text).unwrap();
        assert_eq!(
            properties.0,
            [
                ("sasl.oauthbearer.config".to_owned(), "scope=read".to_owned()),
                ("ssl.endpoint.identification.algorithm".to_owned(), "none".to_owned())
            ]
        );
        assert_eq!(ClientProperties::parse("a=1\nnot a property\n").err(), Some(2));
        assert_eq!(ClientProperties::parse("=value").err(), Some(1));
        // Values may be secrets: Debug shows the keys only.
        let shown = format!("{:?}", ClientProperties::parse("sasl.password=hunter2").unwrap());
        assert!(shown.contains("sasl.password") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn sasl_needs_a_mechanism_and_credentials_and_a_certificate_needs_its_key() {
        let sasl = KafkaSecurity { protocol: SecurityProtocol::SaslSsl, ..KafkaSecurity::default() };
        assert!(sasl.check().unwrap_err().contains("KAFKA_SASL_MECHANISM"));
        let mechanism = KafkaSecurity { sasl_mechanism: Some(SaslMechanism::ScramSha512), ..sasl };
        assert!(mechanism.check().unwrap_err().contains("KAFKA_SASL_PASSWORD"));
        let complete = KafkaSecurity {
            sasl_username: Some("eventline".into()),
            sasl_password: Some(Secret::from("hunter2")),
            ..mechanism
        };
        assert!(complete.check().is_ok());
        assert!(!format!("{complete:?}").contains("hunter2"), "the password is never shown");
        let half =
            KafkaSecurity { ssl_certificate_location: Some("client.pem".into()), ..KafkaSecurity::default() };
        assert!(half.check().unwrap_err().contains("KAFKA_SSL_KEY_LOCATION"));
        assert!(KafkaSecurity::default().check().is_ok());
    }

    #[test]
    fn a_url_shown_keeps_everything_but_its_password() {
        for (url, shown) in [
            ("postgres://app:s3cret@db:5432/eventline", "postgres://app:***@db:5432/eventline"),
            ("rediss://:p%40ss@cache:6380", "rediss://:***@cache:6380"),
            ("postgres://postgres@127.0.0.1:5432/eventline", "postgres://postgres@127.0.0.1:5432/eventline"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(without_password(url), shown);
        }
        let config = DatabaseConfig { url: "postgres://app:s3cret@db/eventline".into(), max_connections: 4 };
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{:?}", RedisConfig::at("redis://:hunter2@cache")).contains("hunter2"));
    }
}
