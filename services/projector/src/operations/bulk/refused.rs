//! Why a bulk load gives way to the batch path: the error every part of the load returns.

use eventline_read_models::{State, Version};

/// Why a bulk load gave way to the batch path.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a user's paid total passes the decimal range")]
    Overflow,
    #[error("a document could not be encoded: {0}")]
    Encoding(String),
    #[error(
        "the log holds more keys than a bulk load keeps in memory ({0}, EVENTLINE_REBUILD_BULK_MAX_KEYS)"
    )]
    TooLarge(usize),
    #[error("reading the log failed: {0}")]
    Log(String),
    #[error("read-model version {0} is no longer `{1}`")]
    Superseded(Version, State),
    #[error("a writer of the load stopped")]
    WriterStopped,
    #[error("no writer for {0}")]
    NoWriter(String),
}

impl Refused {
    pub(super) fn encoding(error: serde_json::Error) -> Refused {
        Refused::Encoding(error.to_string())
    }
}
