//! The load: workers sending mixed commands with idempotency keys, retrying a lost or
//! unconfirmed answer with the same key, counting every kind of answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventline_tools::stack::Service;
use rand::Rng;
use serde_json::json;

use crate::SKUS;

/// Orders placed before the load (one user's, 1 × 10.00 USD each), which the load pays.
pub(crate) const ORDERS: usize = 40;

pub(crate) async fn place_orders(
    http: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let user = uuid::Uuid::new_v4().to_string();
    let body =
        json!({"userId": user, "email": format!("{user}@chaos.example"), "firstName": "C", "lastName": "H"});
    let created = http.post(format!("{base}/users")).json(&body).send().await?;
    anyhow::ensure!(created.status() == 202, "creating the chaos user answered {}", created.status());
    let mut orders = Vec::with_capacity(count);
    for _ in 0..count {
        let order = uuid::Uuid::new_v4().to_string();
        let body = json!({"orderId": order, "userId": user, "currency": "USD",
                          "items": [{"sku": "CHAOS-ITEM", "quantity": 1, "price": "10.00"}]});
        let placed = http.post(format!("{base}/orders")).json(&body).send().await?;
        anyhow::ensure!(placed.status() == 202, "placing a chaos order answered {}", placed.status());
        orders.push(order);
    }
    Ok(orders)
}

/// One command of the load: an adjustment (add, remove or set) of a sku, or a payment of one of
/// the prepared orders (the second payment of an order must be refused).
pub(crate) fn next_command(orders: &[String]) -> (String, serde_json::Value) {
    let mut rng = rand::rng();
    let sku = rng.random_range(0..SKUS);
    let path = format!("/inventory/CHAOS-{sku}/adjustments");
    match rng.random_range(0..20) {
        0..=7 => {
            (path, json!({"adjustmentType": "add", "quantity": rng.random_range(1..=5), "reason": "chaos"}))
        }
        8..=15 => (
            path,
            json!({"adjustmentType": "remove", "quantity": rng.random_range(1..=5), "reason": "chaos"}),
        ),
        16..=17 => {
            (path, json!({"adjustmentType": "set", "quantity": rng.random_range(0..=10), "reason": "chaos"}))
        }
        _ => {
            let order = &orders[rng.random_range(0..orders.len())];
            (
                format!("/orders/{order}/payments"),
                json!({"amount": "10.00", "currency": "USD", "paymentMethod": "card"}),
            )
        }
    }
}

/// Whether a 409/422 answer is the refusal (final) of a rule the load can break: stock, and paying
/// an order twice.
pub(crate) fn is_rule(answer: &serde_json::Value) -> bool {
    use eventline_command::problems::{INSUFFICIENT_STOCK, ORDER_ALREADY_PAID, PAYMENT_EXISTS, STOCK_LIMIT};
    let rules = [INSUFFICIENT_STOCK, STOCK_LIMIT, ORDER_ALREADY_PAID, PAYMENT_EXISTS].map(|rule| rule.slug);
    answer["type"].as_str().and_then(|t| t.rsplit('/').next()).is_some_and(|slug| rules.contains(&slug))
}

/// Workers sending mixed commands until stopped.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    /// Each accepted event id, with when its command was first sent (retries with the same
    /// idempotency key may be answered from an append made before a fault).
    accepted: Arc<Mutex<Vec<(String, Instant)>>>,
    unavailable: Arc<AtomicU64>,
    no_answer: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    payments: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

pub(crate) struct LoadOutcome {
    pub(crate) accepted_ids: Vec<String>,
    pub(crate) unavailable: u64,
    pub(crate) no_answer: u64,
    pub(crate) other: u64,
    pub(crate) refused: u64,
    pub(crate) payments: u64,
}

impl Load {
    /// Commands accepted so far.
    pub(crate) fn accepted_so_far(&self) -> usize {
        self.accepted.lock().map(|ids| ids.len()).unwrap_or(0)
    }

    /// Commands accepted so far that were first sent after `moment`: each needed an append
    /// made after it.
    pub(crate) fn accepted_first_sent_after(&self, moment: Instant) -> usize {
        self.accepted.lock().map(|ids| ids.iter().filter(|(_, sent)| *sent > moment).count()).unwrap_or(0)
    }

    /// Answers `503` so far.
    pub(crate) fn unavailable_so_far(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// Waits up to `within` for more than `before` commands to have been accepted.
    pub(crate) async fn accepted_more_than(&self, before: usize, within: Duration) -> bool {
        within_time(within, || self.accepted_so_far() > before).await
    }

    /// Waits up to `within` for more than `before` answers `503`.
    pub(crate) async fn unavailable_more_than(&self, before: u64, within: Duration) -> bool {
        within_time(within, || self.unavailable_so_far() > before).await
    }

    pub(crate) fn start(
        http: &reqwest::Client,
        command: &Service,
        run: Duration,
        orders: Vec<String>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (unavailable, refused, payments) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (no_answer, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let orders = Arc::new(orders);
        let deadline = Instant::now() + run;
        let workers = (0..8)
            .map(|_| {
                let (http, stop, accepted, unavailable, refused, payments, orders) = (
                    http.clone(),
                    stop.clone(),
                    accepted.clone(),
                    unavailable.clone(),
                    refused.clone(),
                    payments.clone(),
                    orders.clone(),
                );
                let (no_answer, other) = (no_answer.clone(), other.clone());
                let base = command.base.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let (path, body) = next_command(&orders);
                        let key = uuid::Uuid::new_v4().to_string();
                        let first_sent = Instant::now();
                        // A lost or unconfirmed answer is asked again with the same key until it
                        // is definite: 202, or a rule's refusal.
                        loop {
                            let sent = http
                                .post(format!("{base}{path}"))
                                .header("idempotency-key", &key)
                                .json(&body)
                                .send()
                                .await;
                            let Ok(response) = sent else {
                                no_answer.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            };
                            let status = response.status().as_u16();
                            let answer: serde_json::Value = response.json().await.unwrap_or_default();
                            match status {
                                202 => {
                                    if let Some(id) = answer["eventId"].as_str()
                                        && let Ok(mut ids) = accepted.lock()
                                    {
                                        ids.push((id.to_owned(), first_sent));
                                    }
                                    if path.ends_with("/payments") {
                                        payments.fetch_add(1, Ordering::Relaxed);
                                    }
                                    break;
                                }
                                409 if answer["type"]
                                    .as_str()
                                    .is_some_and(|t| t.ends_with("/idempotency-in-progress")) =>
                                {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                409 | 422 if is_rule(&answer) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                503 => {
                                    unavailable.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                _ => {
                                    eprintln!("chaos: unexpected answer {status} to {path}: {answer}");
                                    other.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                            if Instant::now() > deadline + Duration::from_secs(60) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, accepted, unavailable, no_answer, other, refused, payments, workers }
    }

    pub(crate) async fn finish(self) -> LoadOutcome {
        for worker in self.workers {
            let _ = worker.await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let accepted_ids = self
            .accepted
            .lock()
            .map(|ids| ids.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        LoadOutcome {
            accepted_ids,
            unavailable: self.unavailable.load(Ordering::Relaxed),
            no_answer: self.no_answer.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            payments: self.payments.load(Ordering::Relaxed),
        }
    }
}

/// Whether `holds` comes true within `within` (looked at every 50 ms).
async fn within_time(within: Duration, holds: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if holds() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holds()
}
