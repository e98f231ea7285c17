//! The test topic read back as events, independently of the projector.

use eventline_events::{AdjustmentType, Envelope, Event};
use eventline_testkit::TestEnv;
use rdkafka::Message;

/// The events of the topic, in log order per partition, each once (its first copy).
pub async fn events(env: &TestEnv) -> Vec<Envelope> {
    let mut seen = std::collections::HashSet::new();
    env.read_topic()
        .await
        .iter()
        .filter_map(|m| Envelope::decode(m.payload().unwrap_or_default()).ok())
        .filter(|e| seen.insert(e.event_id))
        .collect()
}

/// The stock levels a sku goes through when its events are folded in log order.
pub fn stock_levels(events: &[Envelope], sku: &str) -> Vec<i64> {
    let mut stock = 0;
    let mut levels = Vec::new();
    for envelope in events {
        if let Event::InventoryAdjusted(e) = &envelope.event
            && e.sku == sku
        {
            stock = match e.adjustment_type {
                AdjustmentType::Add => stock + e.quantity,
                AdjustmentType::Remove => stock - e.quantity,
                AdjustmentType::Set => e.quantity,
            };
            levels.push(stock);
        }
    }
    levels
}
