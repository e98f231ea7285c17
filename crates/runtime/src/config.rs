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
    /// Create the topic when it is missing and refuse one that does not keep events forever. Turn
    /// off where the operator manages topics and the clients' ACLs deny CreateTopics and
    /// DescribeConfigs: the services then only wait for the topic to exist.
    #[arg(
        long = "manage-topic",
        env = "EVENTLINE_MANAGE_TOPIC",
        default_value_t = true,
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub manage_topic: bool,
}

/// Where the read models are.
#[derive(Debug, Clone, Args)]
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

/// Where Redis is.
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Redis connection URL.
    #[arg(id = "redis_url", long = "redis-url", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
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
