//! The payloads of the four event types, at their current schema version.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Amount, Currency, DecodeError, EventType};

/// A user signed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub user_id: Uuid,
    #[cfg_attr(feature = "schema", schemars(length(min = 1), pattern(crate::schema::NON_EMPTY_TEXT)))]
    pub email: String,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::TEXT)))]
    pub first_name: String,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::TEXT)))]
    pub last_name: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    #[cfg_attr(feature = "schema", schemars(length(min = 1), pattern(crate::schema::NON_EMPTY_TEXT)))]
    pub sku: String,
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub quantity: u32,
    /// Unit price, in the order's currency.
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::NON_NEGATIVE_AMOUNT)))]
    pub price: Amount,
}

/// A user placed an order. `total_amount` is computed by the command side from the items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub currency: Currency,
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub items: Vec<OrderItem>,
    /// The sum of the items' quantity × price, computed by the command service.
    pub total_amount: Amount,
}

/// The state a settled payment ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Completed,
}

/// A payment for an order was settled. Keyed by the order id so it follows its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaymentSettled {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    /// The order's whole total: a payment settles the order.
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::POSITIVE_AMOUNT)))]
    pub amount: Amount,
    pub currency: Currency,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::TEXT)))]
    pub payment_method: String,
    pub status: PaymentStatus,
}

/// How an inventory adjustment changes the stock of a sku.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentType {
    Add,
    Remove,
    Set,
}

/// The stock of a sku was adjusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct InventoryAdjusted {
    #[cfg_attr(feature = "schema", schemars(length(min = 1), pattern(crate::schema::NON_EMPTY_TEXT)))]
    pub sku: String,
    /// Units added or removed, or the new stock for `set`.
    pub quantity: i64,
    pub adjustment_type: AdjustmentType,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::TEXT)))]
    pub reason: String,
}

/// Any event, at its current schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    UserCreated(UserCreated),
    OrderPlaced(OrderPlaced),
    PaymentSettled(PaymentSettled),
    InventoryAdjusted(InventoryAdjusted),
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self {
            Event::UserCreated(_) => EventType::UserCreated,
            Event::OrderPlaced(_) => EventType::OrderPlaced,
            Event::PaymentSettled(_) => EventType::PaymentSettled,
            Event::InventoryAdjusted(_) => EventType::InventoryAdjusted,
        }
    }

    /// The aggregate the event belongs to, which is also its Kafka message key: payments follow
    /// their order so that an order's events stay in one partition, in order.
    pub fn aggregate_id(&self) -> String {
        match self {
            Event::UserCreated(e) => e.user_id.to_string(),
            Event::OrderPlaced(e) => e.order_id.to_string(),
            Event::PaymentSettled(e) => e.order_id.to_string(),
            Event::InventoryAdjusted(e) => e.sku.clone(),
        }
    }

    /// The kind of aggregate the event belongs to (`aggregate_id` names which one): `user`,
    /// `order` (its placement and its payment) or `inventory` (a sku).
    pub fn aggregate_type(&self) -> &'static str {
        match self {
            Event::UserCreated(_) => "user",
            Event::OrderPlaced(_) | Event::PaymentSettled(_) => "order",
            Event::InventoryAdjusted(_) => "inventory",
        }
    }

    /// The event's `data` object, as the log carries it at the current schema version.
    pub fn data(&self) -> serde_json::Value {
        let data = match self {
            Event::UserCreated(e) => serde_json::to_value(e),
            Event::OrderPlaced(e) => serde_json::to_value(e),
            Event::PaymentSettled(e) => serde_json::to_value(e),
            Event::InventoryAdjusted(e) => serde_json::to_value(e),
        };
        // These plain structs have string keys only: serializing them cannot fail.
        data.unwrap_or_default()
    }

    /// [`Event::data`] as JSON text, serialized straight from the event (no `Value` in between:
    /// for writing a million of them).
    pub fn data_json(&self) -> String {
        let data = match self {
            Event::UserCreated(e) => serde_json::to_string(e),
            Event::OrderPlaced(e) => serde_json::to_string(e),
            Event::PaymentSettled(e) => serde_json::to_string(e),
            Event::InventoryAdjusted(e) => serde_json::to_string(e),
        };
        // As for `data`: serializing these plain structs cannot fail.
        data.unwrap_or_default()
    }

    /// The event of `event_type` whose `data` object (at the current schema version) is `data`.
    pub fn from_data(event_type: EventType, data: serde_json::Value) -> Result<Event, DecodeError> {
        let invalid = |e: serde_json::Error| DecodeError::InvalidData { event_type, reason: e.to_string() };
        Ok(match event_type {
            EventType::UserCreated => Event::UserCreated(serde_json::from_value(data).map_err(invalid)?),
            EventType::OrderPlaced => Event::OrderPlaced(serde_json::from_value(data).map_err(invalid)?),
            EventType::PaymentSettled => {
                Event::PaymentSettled(serde_json::from_value(data).map_err(invalid)?)
            }
            EventType::InventoryAdjusted => {
                Event::InventoryAdjusted(serde_json::from_value(data).map_err(invalid)?)
            }
        })
    }

    /// Every free-text field of the event.
    fn texts(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Event::UserCreated(e) => Box::new([e.email.as_str(), &e.first_name, &e.last_name].into_iter()),
            Event::OrderPlaced(e) => Box::new(e.items.iter().map(|i| i.sku.as_str())),
            Event::PaymentSettled(e) => Box::new(std::iter::once(e.payment_method.as_str())),
            Event::InventoryAdjusted(e) => Box::new([e.sku.as_str(), &e.reason].into_iter()),
        }
    }

    /// Invariants every stored event satisfies whatever produced it. The command side enforces
    /// stricter rules; these are the ones the read model relies on.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.texts().any(|t| t.contains('\0')) {
            // PostgreSQL text cannot hold NUL; such an event could never be stored.
            return Err("a text field contains a NUL character".into());
        }
        match self {
            Event::UserCreated(e) if e.email.is_empty() => Err("email is empty".into()),
            Event::OrderPlaced(e) => {
                if e.items.is_empty() {
                    return Err("an order has no items".into());
                }
                if e.items.iter().any(|i| i.quantity == 0 || i.price < Amount::ZERO) {
                    return Err("an item has a zero quantity or a negative price".into());
                }
                Ok(())
            }
            Event::PaymentSettled(e) if e.amount <= Amount::ZERO => {
                Err("payment amount is not positive".into())
            }
            Event::InventoryAdjusted(e) if e.sku.is_empty() => Err("sku is empty".into()),
            _ => Ok(()),
        }
    }
}

/// `is_valid_sku` as a regular expression, for API descriptions. utoipa's attributes take only
/// literals, so the OpenAPI tests check that every `sku` in the documents carries this one.
pub const SKU_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// `is_valid_sku` in words, for error messages and API descriptions.
pub const SKU_RULE: &str = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit";

/// Whether `sku` is a stock keeping unit as eventline accepts them: a letter or digit, then up to
/// 63 letters, digits, `.`, `_` or `-`.
pub fn is_valid_sku(sku: &str) -> bool {
    let mut chars = sku.chars();
    sku.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
