//! The event schema of eventline: the four event types, the envelope they travel in, their schema
//! versions and how old versions are upcast on read.
//!
//! This crate does no I/O. It is shared by the command service (which encodes events), the projector
//! (which decodes them) and the query service (which reads consistency tokens).

mod currency;
mod envelope;
mod money;
mod position;
#[cfg(feature = "schema")]
pub mod schema;
mod types;
mod upcast;

pub use currency::{Currency, CurrencyError};
pub use envelope::{
    DecodeError, Envelope, EventType, HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_TYPE,
    HEADER_SCHEMA_VERSION, JSON_CONTENT_TYPE, serialize_rfc3339,
};
pub use money::{Amount, AmountError};
pub use position::{CONSISTENCY_TOKEN_PATTERN, ConsistencyToken, LogPosition, TokenError};
pub use types::{
    AdjustmentType, Event, InventoryAdjusted, OrderItem, OrderPlaced, PaymentSettled, PaymentStatus,
    SKU_PATTERN, SKU_RULE, UserCreated, is_valid_sku,
};
