//! Log positions and the consistency token built from them.
//!
//! The command service answers every accepted command with the position its event was appended
//! at; the query service waits until the projection has applied that position before it answers
//! (read-your-writes). A token covers one or more partitions: `0:15` or `0:15,3:7`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an event sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogPosition {
    pub partition: i32,
    pub offset: i64,
}

/// For each partition, the highest offset a reader must see applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsistencyToken {
    offsets: BTreeMap<i32, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a consistency token (expected partition:offset pairs separated by commas, e.g. \"0:15,3:7\")"
)]
pub struct TokenError(pub String);

/// More partitions than any sane topic has; bounds the work a hostile token can cause.
const MAX_TOKEN_PAIRS: usize = 1024;

/// The token's grammar as a regular expression, for API descriptions: 1 to 1024
/// `partition:offset` pairs, a partition 1–9 digits, an offset 1–18 digits (so both fit their
/// integer types), nothing else — no sign, no space. `FromStr` accepts exactly these strings
/// (tested against each other); utoipa's attributes take only literals, so the query service's
/// OpenAPI test checks its copy.
pub const CONSISTENCY_TOKEN_PATTERN: &str = r"^[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18}){0,1023}$";

impl ConsistencyToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a position, keeping the highest offset per partition.
    pub fn include(&mut self, position: LogPosition) {
        let offset = self.offsets.entry(position.partition).or_insert(position.offset);
        *offset = (*offset).max(position.offset);
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The positions the token requires, one per partition.
    pub fn positions(&self) -> impl Iterator<Item = LogPosition> + '_ {
        self.offsets.iter().map(|(&partition, &offset)| LogPosition { partition, offset })
    }
}

impl FromIterator<LogPosition> for ConsistencyToken {
    fn from_iter<I: IntoIterator<Item = LogPosition>>(iter: I) -> Self {
        let mut token = ConsistencyToken::new();
        iter.into_iter().for_each(|p| token.include(p));
        token
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.positions().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", p.partition, p.offset)?;
        }
        Ok(())
    }
}

impl FromStr for ConsistencyToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TokenError(s.chars().take(64).collect());
        // Digits only, of a bounded length: what `CONSISTENCY_TOKEN_PATTERN` says, no more
        // (`str::parse` would also take a sign).
        let number = |text: &str, max_digits: usize| {
            let digits =
                !text.is_empty() && text.len() <= max_digits && text.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| text.parse::<i64>().ok()).flatten().ok_or_else(err)
        };
        let mut token = ConsistencyToken::new();
        for (i, pair) in s.split(',').enumerate() {
            if i == MAX_TOKEN_PAIRS {
                return Err(err());
            }
            let (partition, offset) = pair.split_once(':').ok_or_else(err)?;
            let partition = i32::try_from(number(partition, 9)?).map_err(|_| err())?;
            token.include(LogPosition { partition, offset: number(offset, 18)? });
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_keeps_the_highest_offset_per_partition() {
        let token: ConsistencyToken = [
            LogPosition { partition: 3, offset: 7 },
            LogPosition { partition: 0, offset: 15 },
            LogPosition { partition: 3, offset: 2 },
        ]
        .into_iter()
        .collect();
        assert_eq!(token.to_string(), "0:15,3:7");
        assert_eq!("0:15,3:7".parse::<ConsistencyToken>().unwrap(), token);
    }

    #[test]
    fn malformed_tokens_are_errors() {
        for bad in
            ["", "0", "a:1", "0:-1", "-1:0", "0:1,", "0:1:2", "99999999999:1", "+1:2", "1:+2", " 0:1", "0:1 "]
        {
            assert!(bad.parse::<ConsistencyToken>().is_err(), "{bad:?}");
        }
    }
}
