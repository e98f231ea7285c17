//! An aggregate's events folded into its state, one event at a time: the projection's rules for a
//! single order or sku, written once. Reads as of a version or a time fold the aggregate's history
//! with them, and the live streams fold each change onto the state they sent last, so both show
//! what the projector stores (the projector applies whole batches set-based in SQL; its inventory
//! fold takes [`adjust`] from here, and tests/history.rs checks that a fold of an aggregate's whole
//! history equals the document the projector stored).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eventline_events::{AdjustmentType, Event, InventoryAdjusted, PaymentStatus};
use uuid::Uuid;

use crate::documents::{Item, Order, Payment, Stock};

/// A sku's stock after `adjustment`, from `quantity` before it.
pub fn adjust(quantity: i64, adjustment: &InventoryAdjusted) -> i64 {
    match adjustment.adjustment_type {
        AdjustmentType::Set => adjustment.quantity,
        AdjustmentType::Add => quantity.saturating_add(adjustment.quantity),
        AdjustmentType::Remove => quantity.saturating_sub(adjustment.quantity),
    }
}

/// The stock of one sku, folded from its adjustments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StockFold {
    stock: Option<Stock>,
}

impl StockFold {
    /// A fold that continues from `stock` (as the read model holds it at its version).
    pub fn from(stock: Stock) -> StockFold {
        StockFold { stock: Some(stock) }
    }

    /// Folds one event of the sku (other events are not the sku's and change nothing).
    pub fn apply(&mut self, event: &Event, occurred_at: DateTime<Utc>) {
        let Event::InventoryAdjusted(adjustment) = event else { return };
        let stock = self.stock.get_or_insert_with(|| Stock {
            sku: adjustment.sku.clone(),
            quantity: 0,
            version: 0,
            updated_at: occurred_at,
        });
        stock.quantity = adjust(stock.quantity, adjustment);
        stock.version += 1;
        stock.updated_at = occurred_at;
    }

    /// The stock so far; `None` before the first adjustment.
    pub fn state(&self) -> Option<&Stock> {
        self.stock.as_ref()
    }
}

/// One order with its payment, folded from its events (its placement and its payments; they share
/// its key, so they come in log order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFold {
    order: Option<Order>,
    payments: BTreeMap<Uuid, Payment>,
    events: i64,
}

impl OrderFold {
    /// Folds one event of the order, with the rules of `project/orders.rs` and `project/payments.rs`:
    /// the latest placement gives the order's terms and items, `placedAt` is the earliest
    /// placement and `updatedAt` the latest placement or payment after it; the order is paid once
    /// any payment for it exists, whichever came first; the payment shown is the latest settled.
    pub fn apply(&mut self, event: &Event, occurred_at: DateTime<Utc>) {
        match event {
            Event::OrderPlaced(placed) => {
                let items = placed
                    .items
                    .iter()
                    .map(|item| Item {
                        sku: item.sku.clone(),
                        quantity: i32::try_from(item.quantity).unwrap_or(i32::MAX),
                        price: item.price.to_string(),
                    })
                    .collect();
                let paid = !self.payments.is_empty();
                match &mut self.order {
                    None => {
                        self.order = Some(Order {
                            order_id: placed.order_id,
                            user_id: placed.user_id,
                            currency: placed.currency.code().to_owned(),
                            total_amount: placed.total_amount.to_string(),
                            status: status(paid).to_owned(),
                            items,
                            placed_at: occurred_at,
                            updated_at: occurred_at,
                            payment: None,
                            version: 0,
                        })
                    }
                    Some(order) => {
                        order.user_id = placed.user_id;
                        order.currency = placed.currency.code().to_owned();
                        order.total_amount = placed.total_amount.to_string();
                        order.items = items;
                        order.placed_at = order.placed_at.min(occurred_at);
                        order.updated_at = order.updated_at.max(occurred_at);
                    }
                }
            }
            Event::PaymentSettled(settled) => {
                let status = match settled.status {
                    PaymentStatus::Completed => "completed",
                };
                self.payments.insert(
                    settled.payment_id,
                    Payment {
                        payment_id: settled.payment_id,
                        amount: settled.amount.to_string(),
                        currency: settled.currency.code().to_owned(),
                        payment_method: settled.payment_method.clone(),
                        status: status.to_owned(),
                        settled_at: occurred_at,
                    },
                );
                if let Some(order) = &mut self.order {
                    order.status = self::status(true).to_owned();
                    order.updated_at = order.updated_at.max(occurred_at);
                }
            }
            Event::UserCreated(_) | Event::InventoryAdjusted(_) => return,
        }
        self.events += 1;
        let latest = self.payments.values().max_by_key(|p| (p.settled_at, p.payment_id)).cloned();
        if let Some(order) = &mut self.order {
            order.payment = latest;
            order.version = self.events;
        }
    }

    /// The order so far; `None` until it is placed (a payment alone is not an order).
    pub fn state(&self) -> Option<&Order> {
        self.order.as_ref()
    }
}

fn status(paid: bool) -> &'static str {
    if paid { "paid" } else { "awaiting_payment" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_events::{Currency, OrderItem, OrderPlaced, PaymentSettled};

    fn at(second: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(second), 0).unwrap_or_default()
    }

    fn adjustment(kind: AdjustmentType, quantity: i64) -> Event {
        Event::InventoryAdjusted(InventoryAdjusted {
            sku: "A".into(),
            quantity,
            adjustment_type: kind,
            reason: "test".into(),
        })
    }

    #[test]
    fn a_sku_counts_its_adjustments_and_a_set_replaces_the_stock() {
        let mut fold = StockFold::default();
        assert_eq!(fold.state(), None);
        for (i, (kind, quantity)) in [
            (AdjustmentType::Add, 5),
            (AdjustmentType::Remove, 2),
            (AdjustmentType::Set, 10),
            (AdjustmentType::Add, 1),
        ]
        .into_iter()
        .enumerate()
        {
            fold.apply(&adjustment(kind, quantity), at(i as u32));
        }
        let stock = fold.state().cloned().unwrap_or_else(|| panic!("folded"));
        assert_eq!((stock.quantity, stock.version, stock.updated_at), (11, 4, at(3)));
    }

    #[test]
    fn a_payment_before_its_order_leaves_the_order_paid() {
        let order_id = Uuid::now_v7();
        let currency: Currency = "USD".parse().unwrap_or_else(|_| panic!("a currency"));
        let payment = Event::PaymentSettled(PaymentSettled {
            payment_id: Uuid::now_v7(),
            order_id,
            amount: "10.00".parse().unwrap_or_else(|_| panic!("an amount")),
            currency,
            payment_method: "card".into(),
            status: PaymentStatus::Completed,
        });
        let placed = Event::OrderPlaced(OrderPlaced {
            order_id,
            user_id: Uuid::now_v7(),
            currency,
            items: vec![OrderItem {
                sku: "A".into(),
                quantity: 1,
                price: "10.00".parse().unwrap_or_else(|_| panic!("an amount")),
            }],
            total_amount: "10.00".parse().unwrap_or_else(|_| panic!("an amount")),
        });
        let mut fold = OrderFold::default();
        fold.apply(&payment, at(5));
        assert_eq!(fold.state(), None, "a payment alone is not an order");
        fold.apply(&placed, at(1));
        let order = fold.state().cloned().unwrap_or_else(|| panic!("placed"));
        assert_eq!(order.status, "paid");
        assert_eq!(
            (order.placed_at, order.updated_at),
            (at(1), at(1)),
            "as the projector's insert sets them"
        );
        assert_eq!(order.payment.map(|p| p.amount), Some("10.00".to_owned()));
        assert_eq!(order.version, 2);
    }
}
