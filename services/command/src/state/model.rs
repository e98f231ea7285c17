//! What the business rules know about each aggregate: a fold of its events. Pure: the same fold
//! serves a decision (applied to the state loaded under the aggregates' locks) and a rebuild
//! (applied to every event of the log).

use std::collections::HashMap;

use eventline_events::{AdjustmentType, Amount, Currency, Event};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub email_key: String,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub user_id: Uuid,
    pub currency: Currency,
    pub total: Amount,
    pub payment_id: Option<Uuid>,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuState {
    pub stock: i64,
    pub version: i64,
}

/// The state of some aggregates: those a group of commands touches (loaded from PostgreSQL), or
/// all of them (a fold of the whole log). An aggregate that is absent does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregates {
    pub users: HashMap<Uuid, UserState>,
    /// Email key (see [`email_key`]) → the user who has it.
    pub emails: HashMap<String, Uuid>,
    pub orders: HashMap<Uuid, OrderState>,
    /// Payment id → the order it settled.
    pub payments: HashMap<Uuid, Uuid>,
    pub skus: HashMap<String, SkuState>,
}

/// Emails are unique case-insensitively.
pub fn email_key(email: &str) -> String {
    email.to_lowercase()
}

/// An aggregate named by a client (`If-Match`) or by a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AggregateRef {
    User(Uuid),
    Order(Uuid),
    Sku(String),
}

impl Aggregates {
    /// The number of events of an aggregate; 0 when it does not exist.
    pub fn version(&self, aggregate: &AggregateRef) -> i64 {
        match aggregate {
            AggregateRef::User(id) => self.users.get(id).map_or(0, |u| u.version),
            AggregateRef::Order(id) => self.orders.get(id).map_or(0, |o| o.version),
            AggregateRef::Sku(sku) => self.skus.get(sku).map_or(0, |s| s.version),
        }
    }

    /// Applies one event. Total: the log may hold history written before the rules existed
    /// (a payment without its order, a stock below zero); the fold records it as it is.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::UserCreated(e) => {
                let key = email_key(&e.email);
                let version = self.users.get(&e.user_id).map_or(0, |u| u.version) + 1;
                if let Some(previous) =
                    self.users.insert(e.user_id, UserState { email_key: key.clone(), version })
                    && previous.email_key != key
                    && self.emails.get(&previous.email_key) == Some(&e.user_id)
                {
                    self.emails.remove(&previous.email_key);
                }
                self.emails.insert(key, e.user_id);
            }
            Event::OrderPlaced(e) => {
                let previous = self.orders.get(&e.order_id);
                let version = previous.map_or(0, |o| o.version) + 1;
                let payment_id = previous.and_then(|o| o.payment_id);
                self.orders.insert(
                    e.order_id,
                    OrderState {
                        user_id: e.user_id,
                        currency: e.currency,
                        total: e.total_amount,
                        payment_id,
                        version,
                    },
                );
            }
            Event::PaymentSettled(e) => {
                self.payments.insert(e.payment_id, e.order_id);
                if let Some(order) = self.orders.get_mut(&e.order_id) {
                    order.payment_id = Some(e.payment_id);
                    order.version += 1;
                }
            }
            Event::InventoryAdjusted(e) => {
                let sku = self.skus.entry(e.sku.clone()).or_insert(SkuState { stock: 0, version: 0 });
                sku.stock = match e.adjustment_type {
                    AdjustmentType::Add => sku.stock.saturating_add(e.quantity),
                    AdjustmentType::Remove => sku.stock.saturating_sub(e.quantity),
                    AdjustmentType::Set => e.quantity,
                };
                sku.version += 1;
            }
        }
    }

    /// A copy of what `self` knows about the aggregates `events` read or write: enough to check
    /// and apply them, without copying the rest.
    pub fn part_for<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Aggregates {
        let mut part = Aggregates::default();
        let user = |part: &mut Aggregates, id: &Uuid| {
            if let Some(state) = self.users.get(id) {
                part.users.insert(*id, state.clone());
            }
        };
        for event in events {
            match event {
                Event::UserCreated(e) => {
                    user(&mut part, &e.user_id);
                    let key = email_key(&e.email);
                    if let Some(owner) = self.emails.get(&key) {
                        part.emails.insert(key, *owner);
                    }
                }
                Event::OrderPlaced(e) => {
                    user(&mut part, &e.user_id);
                    if let Some(order) = self.orders.get(&e.order_id) {
                        part.orders.insert(e.order_id, order.clone());
                    }
                }
                Event::PaymentSettled(e) => {
                    if let Some(order) = self.orders.get(&e.order_id) {
                        part.orders.insert(e.order_id, order.clone());
                    }
                    if let Some(order_id) = self.payments.get(&e.payment_id) {
                        part.payments.insert(e.payment_id, *order_id);
                    }
                }
                Event::InventoryAdjusted(e) => {
                    if let Some(sku) = self.skus.get(&e.sku) {
                        part.skus.insert(e.sku.clone(), sku.clone());
                    }
                }
            }
        }
        part
    }

    /// Copies into `self` what `other` knows about aggregates: `other` is a later state of some of
    /// them (a decision made on a scratch copy).
    pub fn absorb(&mut self, other: Aggregates) {
        self.users.extend(other.users);
        self.emails.extend(other.emails);
        self.orders.extend(other.orders);
        self.payments.extend(other.payments);
        self.skus.extend(other.skus);
    }
}

/// What a decision on `event` must hold locked, as stable text keys: the aggregate itself, and the
/// unique values it claims (an email, a payment id).
pub fn lock_keys(event: &Event) -> Vec<String> {
    match event {
        Event::UserCreated(e) => {
            vec![format!("user:{}", e.user_id), format!("email:{}", email_key(&e.email))]
        }
        Event::OrderPlaced(e) => vec![format!("order:{}", e.order_id)],
        Event::PaymentSettled(e) => {
            vec![format!("order:{}", e.order_id), format!("payment:{}", e.payment_id)]
        }
        Event::InventoryAdjusted(e) => vec![format!("sku:{}", e.sku)],
    }
}

#[cfg(test)]
mod tests {
    use eventline_events::{
        InventoryAdjusted, OrderItem, OrderPlaced, PaymentSettled, PaymentStatus, UserCreated,
    };

    use super::*;

    pub fn adjust(sku: &str, adjustment_type: AdjustmentType, quantity: i64) -> Event {
        Event::InventoryAdjusted(InventoryAdjusted {
            sku: sku.into(),
            quantity,
            adjustment_type,
            reason: "test".into(),
        })
    }

    #[test]
    fn stock_follows_add_remove_and_set_in_order_and_counts_versions() {
        let mut state = Aggregates::default();
        for event in [
            adjust("A", AdjustmentType::Add, 5),
            adjust("A", AdjustmentType::Remove, 2),
            adjust("A", AdjustmentType::Set, 10),
            adjust("A", AdjustmentType::Remove, 1),
        ] {
            state.apply(&event);
        }
        assert_eq!(state.skus["A"], SkuState { stock: 9, version: 4 });
        assert_eq!(state.version(&AggregateRef::Sku("A".into())), 4);
        assert_eq!(state.version(&AggregateRef::Sku("B".into())), 0);
    }

    #[test]
    fn an_order_counts_its_payment_and_a_payment_before_its_order_is_still_remembered() {
        let (order_id, user_id, payment_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let usd: Currency = "USD".parse().unwrap();
        let payment = Event::PaymentSettled(PaymentSettled {
            payment_id,
            order_id,
            amount: "3.00".parse().unwrap(),
            currency: usd,
            payment_method: "card".into(),
            status: PaymentStatus::Completed,
        });
        let order = Event::OrderPlaced(OrderPlaced {
            order_id,
            user_id,
            currency: usd,
            items: vec![OrderItem { sku: "A".into(), quantity: 1, price: "3.00".parse().unwrap() }],
            total_amount: "3.00".parse().unwrap(),
        });
        let mut in_order = Aggregates::default();
        in_order.apply(&order);
        in_order.apply(&payment);
        assert_eq!(in_order.orders[&order_id].payment_id, Some(payment_id));
        assert_eq!(in_order.orders[&order_id].version, 2);
        let mut legacy = Aggregates::default();
        legacy.apply(&payment);
        assert_eq!(legacy.payments[&payment_id], order_id, "the payment id stays taken");
    }

    #[test]
    fn emails_are_claimed_case_insensitively() {
        let mut state = Aggregates::default();
        let user_id = Uuid::now_v7();
        state.apply(&Event::UserCreated(UserCreated {
            user_id,
            email: "Ada@Example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        }));
        assert_eq!(state.emails.get("ada@example.com"), Some(&user_id));
    }
}
