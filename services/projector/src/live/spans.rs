//! The projector's spans. A batch is applied in one transaction, so its work is one `process`
//! span (with the SQL and Redis spans under it) linked to the producer span of each event; and,
//! when traces are exported, each event gets a span of its own in its producer's trace — the
//! trace of the request that appended it — linked back to the batch, so one trace follows a
//! request from the command API through the log into the read models.

use eventline_events::{HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use eventline_runtime::telemetry;
use tracing::Span;

use crate::project::{BatchOutcome, Record};

/// The spans of one batch; the per-event spans end when this is dropped (after the commit).
pub struct BatchSpans {
    pub batch: Span,
    _events: Vec<Span>,
}

impl BatchSpans {
    pub fn start(topic: &str, group: &str, records: &[Record]) -> BatchSpans {
        let batch = tracing::info_span!(
            "process batch",
            otel.name = %format_args!("{topic} process"),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %topic,
            messaging.consumer.group.name = %group,
            messaging.batch.message_count = records.len(),
            eventline.applied = tracing::field::Empty,
            eventline.duplicates = tracing::field::Empty,
            eventline.dead_lettered = tracing::field::Empty,
        );
        if !telemetry::exporting() {
            return BatchSpans { batch, _events: Vec::new() };
        }
        let producers: Vec<_> =
            records.iter().map(|record| telemetry::remote_span(|name| header(record, name))).collect();
        // Links are taken when a span starts, so all of them before the batch span is used.
        telemetry::link(&batch, producers.iter().flatten().cloned());
        let batch_context = telemetry::span_context(&batch);
        let events = records
            .iter()
            .zip(producers)
            .filter_map(|(record, producer)| Some((record, producer?)))
            .map(|(record, producer)| {
                let span = tracing::info_span!(
                    parent: None,
                    "process event",
                    otel.name = %format_args!("{topic} process"),
                    otel.kind = "consumer",
                    messaging.system = "kafka",
                    messaging.operation.type = "process",
                    messaging.destination.name = %topic,
                    messaging.consumer.group.name = %group,
                    messaging.destination.partition.id = %record.partition,
                    messaging.kafka.offset = record.offset,
                    messaging.message.id = header(record, HEADER_EVENT_ID),
                    eventline.event.type = header(record, HEADER_EVENT_TYPE),
                );
                telemetry::continue_from(&span, producer);
                telemetry::link(&span, batch_context.clone());
                span
            })
            .collect();
        BatchSpans { batch, _events: events }
    }
}

impl BatchSpans {
    /// Records what the batch did.
    pub fn applied(&self, outcome: &BatchOutcome) {
        self.batch.record("eventline.applied", outcome.applied);
        self.batch.record("eventline.duplicates", outcome.duplicates);
        self.batch.record("eventline.dead_lettered", outcome.dead_lettered);
    }
}

fn header<'r>(record: &'r Record, name: &str) -> Option<&'r str> {
    record.headers.get(name).map(String::as_str)
}
