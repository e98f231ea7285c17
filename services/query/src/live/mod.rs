//! Live streams: who is watching which aggregate, and the changes they are sent.
//!
//! One [`feed`] task per process reads the events the projector applied from the event index, as
//! the checkpoints move, and publishes each to the subjects it changes: its aggregate, and for an
//! order's events the user who placed it. Each subject has a bounded broadcast channel; a stream
//! that falls further behind than [`Changes::buffer`] loses its place in it (tokio's `Lagged`) and
//! is reset, so a client that stops reading holds a fixed amount of memory, not a growing queue.
//! The streams themselves ([`stream`]) fold each change onto the state they sent last.

pub mod feed;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use eventline_read_models::history::{Aggregate, Change};
use tokio::sync::broadcast;

/// The subjects being watched, each with its channel of changes.
#[derive(Clone)]
pub struct Changes {
    watched: Arc<Mutex<HashMap<Aggregate, broadcast::Sender<Arc<Change>>>>>,
    buffer: usize,
}

impl Changes {
    /// `buffer`: the changes a stream may fall behind by before it is reset.
    pub fn new(buffer: usize) -> Changes {
        Changes { watched: Arc::default(), buffer: buffer.max(1) }
    }

    pub fn buffer(&self) -> usize {
        self.buffer
    }

    /// Starts receiving the changes of `subject`.
    pub fn subscribe(&self, subject: Aggregate) -> Subscription {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver =
            watched.entry(subject.clone()).or_insert_with(|| broadcast::channel(self.buffer).0).subscribe();
        Subscription { receiver: Some(receiver), subject, changes: self.clone() }
    }

    /// Whether anyone watches anything (the feed skips reading the index when not).
    pub fn idle(&self) -> bool {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Sends `change` to the streams of the subjects it changes.
    pub fn publish(&self, change: Change) {
        let subjects = subjects(&change);
        let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let senders: Vec<_> = subjects.iter().filter_map(|s| watched.get(s).cloned()).collect();
        drop(watched);
        if senders.is_empty() {
            return;
        }
        let change = Arc::new(change);
        for sender in senders {
            // No receiver left: the stream ended since; nothing to do.
            let _ = sender.send(change.clone());
        }
    }
}

/// The subjects an indexed event changes: its aggregate, and the user an order belongs to.
fn subjects(change: &Change) -> Vec<Aggregate> {
    let event = &change.event;
    let aggregate = match event.aggregate_type.as_str() {
        "user" => uuid::Uuid::try_parse(&event.aggregate_id).ok().map(Aggregate::User),
        "order" => uuid::Uuid::try_parse(&event.aggregate_id).ok().map(Aggregate::Order),
        "inventory" => Some(Aggregate::Inventory(event.aggregate_id.clone())),
        _ => None,
    };
    let owner = change.user_id.filter(|_| event.aggregate_type == "order").map(Aggregate::User);
    aggregate.into_iter().chain(owner).collect()
}

/// A stream's place in its subject's channel; the subject is forgotten when its last stream ends.
pub struct Subscription {
    receiver: Option<broadcast::Receiver<Arc<Change>>>,
    subject: Aggregate,
    changes: Changes,
}

impl Subscription {
    /// The next change, or how many were lost when the stream fell behind by more than the buffer.
    pub async fn next(&mut self) -> Result<Arc<Change>, Lost> {
        let Some(receiver) = self.receiver.as_mut() else { return Err(Lost::Ended) };
        receiver.recv().await.map_err(|error| match error {
            broadcast::error::RecvError::Lagged(missed) => Lost::Behind(missed),
            broadcast::error::RecvError::Closed => Lost::Ended,
        })
    }
}

/// Why a stream got no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// It fell behind by more than the buffer; this many changes were dropped for it.
    Behind(u64),
    /// The service is stopping.
    Ended,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut watched = self.changes.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if watched.get(&self.subject).is_some_and(|sender| sender.receiver_count() == 0) {
            watched.remove(&self.subject);
        }
    }
}
