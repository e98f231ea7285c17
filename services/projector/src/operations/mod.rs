//! Operator commands, run beside the live projector (`eventline-projector <command>`):
//!
//! - `rebuild`: a new read-model version filled from the log next to the live one, then switched
//!   to; `rollback` to the previous one;
//! - `verify`: the live version compared with a fold of the log, to detect drift;
//! - `status` (in `live`, shared with the admin API): partitions, checkpoints, lag and dead letters;
//! - `cli`: the subcommands' output (and `dlq` work), `progress`: bars and log lines.

pub mod bulk;
pub mod cli;
pub mod progress;
pub mod rebuild;
pub mod verify;
