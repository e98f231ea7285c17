//! The business rules: whether an event may be appended given the state of its aggregates. Pure,
//! like the rest of a decision; [`Aggregates::apply`] then gives the state after it.

use axum::http::StatusCode;
use eventline_events::{AdjustmentType, Amount, Currency, Event};
use eventline_runtime::problem::{Problem, ProblemType};

use crate::problems;
use uuid::Uuid;

use super::model::{AggregateRef, Aggregates, email_key};

/// A rule a command breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    UserExists { user_id: Uuid },
    EmailTaken,
    OrderExists { order_id: Uuid },
    UnknownUser { user_id: Uuid },
    UnknownOrder { order_id: Uuid },
    OrderAlreadyPaid { order_id: Uuid },
    PaymentExists { payment_id: Uuid },
    CurrencyMismatch { order: Currency, payment: Currency },
    AmountMismatch { total: Amount, amount: Amount },
    InsufficientStock { sku: String, available: i64, requested: i64 },
    StockLimit { sku: String, stock: i64 },
    VersionMismatch { expected: i64, actual: i64 },
}

/// Most units a sku may hold, so that a sum of adjustments never overflows.
pub const MAX_STOCK: i64 = 1_000_000_000_000;

/// Checks `event` against `state`; `Ok` means it may be appended.
pub fn check(state: &Aggregates, event: &Event) -> Result<(), Rejection> {
    match event {
        Event::UserCreated(e) => {
            if state.users.contains_key(&e.user_id) {
                return Err(Rejection::UserExists { user_id: e.user_id });
            }
            if state.emails.contains_key(&email_key(&e.email)) {
                return Err(Rejection::EmailTaken);
            }
            Ok(())
        }
        Event::OrderPlaced(e) => {
            if state.orders.contains_key(&e.order_id) {
                return Err(Rejection::OrderExists { order_id: e.order_id });
            }
            if !state.users.contains_key(&e.user_id) {
                return Err(Rejection::UnknownUser { user_id: e.user_id });
            }
            Ok(())
        }
        Event::PaymentSettled(e) => {
            let Some(order) = state.orders.get(&e.order_id) else {
                return Err(Rejection::UnknownOrder { order_id: e.order_id });
            };
            if order.payment_id.is_some() {
                return Err(Rejection::OrderAlreadyPaid { order_id: e.order_id });
            }
            if state.payments.contains_key(&e.payment_id) {
                return Err(Rejection::PaymentExists { payment_id: e.payment_id });
            }
            if order.currency != e.currency {
                return Err(Rejection::CurrencyMismatch { order: order.currency, payment: e.currency });
            }
            if order.total != e.amount {
                return Err(Rejection::AmountMismatch { total: order.total, amount: e.amount });
            }
            Ok(())
        }
        Event::InventoryAdjusted(e) => {
            let stock = state.skus.get(&e.sku).map_or(0, |s| s.stock);
            match e.adjustment_type {
                AdjustmentType::Remove if e.quantity > stock => Err(Rejection::InsufficientStock {
                    sku: e.sku.clone(),
                    available: stock.max(0),
                    requested: e.quantity,
                }),
                AdjustmentType::Add if stock.saturating_add(e.quantity) > MAX_STOCK => {
                    Err(Rejection::StockLimit { sku: e.sku.clone(), stock })
                }
                _ => Ok(()),
            }
        }
    }
}

/// The `If-Match` precondition: the aggregate is still at the version the client saw.
pub fn check_version(state: &Aggregates, aggregate: &AggregateRef, expected: i64) -> Result<(), Rejection> {
    let actual = state.version(aggregate);
    if actual == expected { Ok(()) } else { Err(Rejection::VersionMismatch { expected, actual }) }
}

impl Rejection {
    /// The rule's problem type (`crate::problems`).
    pub fn kind(&self) -> ProblemType {
        match self {
            Rejection::UserExists { .. } => problems::USER_EXISTS,
            Rejection::EmailTaken => problems::EMAIL_TAKEN,
            Rejection::OrderExists { .. } => problems::ORDER_EXISTS,
            Rejection::UnknownUser { .. } => problems::UNKNOWN_USER,
            Rejection::UnknownOrder { .. } => problems::ORDER_NOT_FOUND,
            Rejection::OrderAlreadyPaid { .. } => problems::ORDER_ALREADY_PAID,
            Rejection::PaymentExists { .. } => problems::PAYMENT_EXISTS,
            Rejection::CurrencyMismatch { .. } => problems::PAYMENT_CURRENCY_MISMATCH,
            Rejection::AmountMismatch { .. } => problems::PAYMENT_AMOUNT_MISMATCH,
            Rejection::InsufficientStock { .. } => problems::INSUFFICIENT_STOCK,
            Rejection::StockLimit { .. } => problems::STOCK_LIMIT,
            Rejection::VersionMismatch { .. } => problems::VERSION_MISMATCH,
        }
    }

    pub fn slug(&self) -> &'static str {
        self.kind().slug
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status
    }

    pub fn detail(&self) -> String {
        match self {
            Rejection::UserExists { user_id } => format!("User {user_id} already exists."),
            Rejection::EmailTaken => {
                "Another user already has this email (compared case-insensitively).".into()
            }
            Rejection::OrderExists { order_id } => format!("Order {order_id} already exists."),
            Rejection::UnknownUser { user_id } => {
                format!("User {user_id} does not exist; create the user first.")
            }
            Rejection::UnknownOrder { order_id } => format!("Order {order_id} does not exist."),
            Rejection::OrderAlreadyPaid { order_id } => {
                format!("Order {order_id} is already paid; an order is paid once.")
            }
            Rejection::PaymentExists { payment_id } => format!("Payment {payment_id} was already settled."),
            Rejection::CurrencyMismatch { order, payment } => {
                format!("The order is in {order}; the payment is in {payment}.")
            }
            Rejection::AmountMismatch { total, amount } => {
                format!("A payment settles the whole order: the total is {total}, the payment is {amount}.")
            }
            Rejection::InsufficientStock { sku, available, requested } => {
                format!("Cannot remove {requested} of {sku}: {available} available.")
            }
            Rejection::StockLimit { sku, stock } => {
                format!("Adding to {sku} (stock {stock}) would exceed the limit of {MAX_STOCK} units.")
            }
            Rejection::VersionMismatch { expected, actual } => format!(
                "If-Match asked for version {expected}; the aggregate is at version {actual}. Read it again and decide anew."
            ),
        }
    }

    pub fn problem(&self) -> Problem {
        let problem = Problem::new(self.kind(), self.detail());
        match self {
            Rejection::InsufficientStock { available, .. } => problem.with(problems::AVAILABLE, *available),
            Rejection::VersionMismatch { actual, .. } => problem.with(problems::CURRENT_VERSION, *actual),
            _ => problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use eventline_events::{
        InventoryAdjusted, OrderItem, OrderPlaced, PaymentSettled, PaymentStatus, UserCreated,
    };

    use super::*;

    fn user(user_id: Uuid, email: &str) -> Event {
        Event::UserCreated(UserCreated {
            user_id,
            email: email.into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        })
    }

    fn order(order_id: Uuid, user_id: Uuid, total: &str, currency: &str) -> Event {
        Event::OrderPlaced(OrderPlaced {
            order_id,
            user_id,
            currency: currency.parse().unwrap(),
            items: vec![OrderItem { sku: "A".into(), quantity: 1, price: total.parse().unwrap() }],
            total_amount: total.parse().unwrap(),
        })
    }

    fn payment(payment_id: Uuid, order_id: Uuid, amount: &str, currency: &str) -> Event {
        Event::PaymentSettled(PaymentSettled {
            payment_id,
            order_id,
            amount: amount.parse().unwrap(),
            currency: currency.parse().unwrap(),
            payment_method: "card".into(),
            status: PaymentStatus::Completed,
        })
    }

    fn adjust(sku: &str, adjustment_type: AdjustmentType, quantity: i64) -> Event {
        Event::InventoryAdjusted(InventoryAdjusted {
            sku: sku.into(),
            quantity,
            adjustment_type,
            reason: "r".into(),
        })
    }

    /// Given `history`, when `event`: the rule's answer.
    fn decide(history: &[Event], event: &Event) -> Result<(), &'static str> {
        let mut state = Aggregates::default();
        history.iter().for_each(|e| state.apply(e));
        check(&state, event).map_err(|r| r.slug())
    }

    #[test]
    fn users() {
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let history = [user(ada, "ada@example.com")];
        assert_eq!(decide(&history, &user(bob, "bob@example.com")), Ok(()));
        assert_eq!(decide(&history, &user(ada, "other@example.com")), Err("user-exists"));
        assert_eq!(decide(&history, &user(bob, "ADA@example.COM")), Err("email-taken"));
    }

    #[test]
    fn orders() {
        let (ada, order_id) = (Uuid::now_v7(), Uuid::now_v7());
        let history = [user(ada, "ada@example.com")];
        assert_eq!(decide(&history, &order(order_id, ada, "10.00", "USD")), Ok(()));
        assert_eq!(decide(&[], &order(order_id, ada, "10.00", "USD")), Err("unknown-user"));
        let placed = [user(ada, "ada@example.com"), order(order_id, ada, "10.00", "USD")];
        assert_eq!(decide(&placed, &order(order_id, ada, "5.00", "EUR")), Err("order-exists"));
    }

    #[test]
    fn payments() {
        let (ada, order_id, pay) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let placed = [user(ada, "ada@example.com"), order(order_id, ada, "2997", "JPY")];
        assert_eq!(decide(&placed, &payment(pay, order_id, "2997", "JPY")), Ok(()));
        assert_eq!(decide(&[], &payment(pay, order_id, "2997", "JPY")), Err("order-not-found"));
        assert_eq!(decide(&placed, &payment(pay, order_id, "3.00", "USD")), Err("payment-currency-mismatch"));
        assert_eq!(decide(&placed, &payment(pay, order_id, "2996", "JPY")), Err("payment-amount-mismatch"));
        let paid = [placed[0].clone(), placed[1].clone(), payment(pay, order_id, "2997", "JPY")];
        assert_eq!(
            decide(&paid, &payment(Uuid::now_v7(), order_id, "2997", "JPY")),
            Err("order-already-paid")
        );
        let other_order = Uuid::now_v7();
        let mut reused = paid.to_vec();
        reused.push(order(other_order, ada, "2997", "JPY"));
        assert_eq!(decide(&reused, &payment(pay, other_order, "2997", "JPY")), Err("payment-exists"));
    }

    #[test]
    fn stock_never_goes_below_zero() {
        let history = [adjust("A", AdjustmentType::Add, 3)];
        assert_eq!(decide(&history, &adjust("A", AdjustmentType::Remove, 3)), Ok(()));
        assert_eq!(decide(&history, &adjust("A", AdjustmentType::Remove, 4)), Err("insufficient-stock"));
        assert_eq!(decide(&[], &adjust("B", AdjustmentType::Remove, 5)), Err("insufficient-stock"));
        assert_eq!(decide(&[], &adjust("B", AdjustmentType::Set, 0)), Ok(()));
        let mut state = Aggregates::default();
        state.apply(&history[0]);
        let rejection = check(&state, &adjust("A", AdjustmentType::Remove, 4)).unwrap_err();
        let problem = serde_json::to_value(rejection.problem()).unwrap_or_default();
        assert_eq!(problem["available"], 3, "the problem says what is available: {problem}");
    }

    #[test]
    fn versions_guard_if_match() {
        let mut state = Aggregates::default();
        state.apply(&adjust("A", AdjustmentType::Add, 3));
        let sku = AggregateRef::Sku("A".into());
        assert_eq!(check_version(&state, &sku, 1), Ok(()));
        assert_eq!(check_version(&state, &sku, 0).unwrap_err().status(), StatusCode::PRECONDITION_FAILED);
    }
}
