//! Upcasting: how an event written with an older schema version is read today.
//!
//! Rules for evolving an event type (see `docs/events.md`):
//! - adding an optional field, or one with a default, needs no new version;
//! - renaming, removing, or changing the meaning of a field bumps `EventType::current_version`
//!   and adds a step here that rewrites version N's `data` into version N+1's;
//! - old events are never rewritten in the log: they are upcast each time they are read.

use serde_json::Value;

use crate::{DecodeError, EventType};

/// One step from `from_version` to `from_version + 1` of one event type.
type Step = fn(Value) -> Result<Value, String>;

/// The upcasting steps that exist, per (type, from_version). Every type is at version 1 so far.
fn step(_event_type: EventType, _from_version: u32) -> Option<Step> {
    None
}

/// Brings `data` written at `version` up to the type's current version.
pub(crate) fn to_current(event_type: EventType, version: u32, mut data: Value) -> Result<Value, DecodeError> {
    let current = event_type.current_version();
    let unsupported = || DecodeError::UnsupportedSchemaVersion { event_type, version, current };
    if version == 0 || version > current {
        return Err(unsupported());
    }
    for from in version..current {
        let step = step(event_type, from).ok_or_else(unsupported)?;
        data = step(data).map_err(|reason| DecodeError::InvalidData { event_type, reason })?;
    }
    Ok(data)
}
