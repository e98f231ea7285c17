//! Deciding commands against the decision state, many at a time (group commit).
//!
//! Requests queue up; each of a few workers takes every request waiting (up to a group size) and,
//! for the whole group: takes the locks of every aggregate involved (in one canonical order),
//! reads their state, decides each request in arrival order against the state left by the ones
//! before it, writes the new state and the pending envelopes in one transaction, commits, appends
//! (acks=all) any older pending envelope of those aggregates and then the new ones, records where
//! they landed, and only then releases the locks. A crash anywhere leaves either nothing decided or
//! a pending decision that the next lock holder, or the sweep, appends with the same event id.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventline_events::{Envelope, Event, LogPosition};
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::model::{AggregateRef, Aggregates, lock_keys};
use super::rules::{self, Rejection};
use super::store::{self, NewDecision, Wanted};
use crate::log::{AppendError, EventLog, Outgoing, PartialAppend};
use crate::metrics::{GroupStage, GroupStages};

/// Most requests decided in one transaction.
const MAX_GROUP: usize = 256;
/// How long a command waits for the state to become ready before it is answered 503.
const READY_WAIT: Duration = Duration::from_secs(3);

/// One HTTP request's decided events, to be checked against the state and appended together.
#[derive(Debug)]
pub struct Request {
    pub envelopes: Vec<Envelope>,
    /// `If-Match`: the aggregate must be at this version.
    pub expect: Option<(AggregateRef, i64)>,
    /// The request's span: its events' producer spans are its children.
    pub span: tracing::Span,
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// Every event is in the log, at these positions: appended now, or by an earlier attempt of
    /// the same request (an idempotent retry).
    Accepted(Vec<LogPosition>),
    /// Rules broken, by the index of the event in the request; nothing was decided.
    Rejected(Vec<(usize, Rejection)>),
    /// Decided, but the append failed: the decision is pending and will reach the log.
    NotAppended(PartialAppend),
    /// Nothing decided: the state cannot be read or written now.
    StateUnavailable(String),
    /// Nothing decided: the state is being rebuilt from the log.
    NotReady,
}

#[derive(Clone)]
pub struct Decider {
    queue: mpsc::Sender<Job>,
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Outcome>,
    queued_at: std::time::Instant,
}

/// What the workers share.
pub(super) struct Shared {
    pub pool: PgPool,
    pub log: EventLog,
    /// Whether the state is a complete fold of the log; decisions wait for it.
    pub ready: AtomicBool,
    /// Set when a decision found the state's tables missing.
    pub lost: AtomicBool,
}

impl Decider {
    pub(super) fn start(shared: Arc<Shared>, workers: usize) -> Self {
        let (queue, receiver) = mpsc::channel::<Job>(4 * MAX_GROUP);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            let (shared, receiver) = (shared.clone(), receiver.clone());
            tokio::spawn(async move {
                while let Some(jobs) = next_group(&receiver).await {
                    decide_group(&shared, jobs).await;
                }
            });
        }
        Decider { queue }
    }

    pub async fn decide(&self, request: Request) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job { request, reply, queued_at: std::time::Instant::now() };
        if self.queue.send(job).await.is_err() {
            return Outcome::StateUnavailable("the decider stopped".into());
        }
        answer.await.unwrap_or_else(|_| Outcome::StateUnavailable("the decider stopped".into()))
    }
}

async fn next_group(receiver: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut jobs = vec![first];
    while jobs.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

async fn decide_group(shared: &Shared, jobs: Vec<Job>) {
    crate::metrics::group_size(jobs.len());
    // A short fold (start-up on a small log) is waited out rather than answered 503.
    let waiting_since = tokio::time::Instant::now();
    while !shared.ready.load(Ordering::Acquire) && waiting_since.elapsed() < READY_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !shared.ready.load(Ordering::Acquire) {
        for job in jobs {
            let _ = job.reply.send(Outcome::NotReady);
        }
        return;
    }
    let requests: Vec<&Request> = jobs.iter().map(|j| &j.request).collect();
    let oldest = jobs.iter().map(|j| j.queued_at).min().unwrap_or_else(std::time::Instant::now);
    let mut stages = GroupStages::since(oldest);
    stages.lap(GroupStage::Queue);
    let mut outcomes = on_connection(shared, &requests, &mut stages).await;
    // The pool does not test a connection before handing it out (a round trip per group): one
    // that broke while idle (PostgreSQL restarted) fails here, is closed, and the group is decided
    // again on the next, until the pool has handed out as many as it can hold. Deciding again is
    // safe at any stage: a decision already saved is found by its event ids and appended, not
    // decided twice.
    let mut attempts = shared.pool.options().get_max_connections();
    while attempts > 0 && outcomes.as_ref().is_err_and(is_connection_lost) {
        attempts -= 1;
        outcomes = on_connection(shared, &requests, &mut stages).await;
    }
    let outcomes = outcomes.unwrap_or_else(|error| {
        if is_missing_table(&error) {
            shared.lost.store(true, Ordering::Release);
            shared.ready.store(false, Ordering::Release);
            tracing::error!(%error, "The decision state's tables are missing; it will be rebuilt from the log");
        } else {
            tracing::warn!(%error, "Deciding failed: the decision state is unavailable");
        }
        requests.iter().map(|_| Outcome::StateUnavailable(error.to_string())).collect()
    });
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
}

/// Decides `requests` on a connection of the pool and releases its locks.
async fn on_connection(
    shared: &Shared,
    requests: &[&Request],
    stages: &mut GroupStages,
) -> anyhow::Result<Vec<Outcome>> {
    let mut conn = shared.pool.acquire().await?;
    stages.lap(GroupStage::Connection);
    let outcomes = locked(&shared.log, &mut conn, requests, stages).await;
    release(conn).await;
    stages.lap(GroupStage::Release);
    outcomes
}

fn is_connection_lost(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Io(_) | sqlx::Error::Protocol(_)))
}

/// Gives the connection back without any lock: if the locks cannot be released, the connection
/// is closed, which releases them.
async fn release(mut conn: PoolConnection<Postgres>) {
    if let Err(error) = store::unlock_all(&mut conn).await {
        tracing::warn!(%error, "Releasing decision locks failed; closing the connection");
        drop(conn.detach());
    }
}

fn is_missing_table(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42P01" || code == "3F000")
}

/// What was decided for one request before the append.
enum Verdict {
    New,
    Replay,
    Rejected(Vec<(usize, Rejection)>),
}

/// Decides `requests` as one group on `conn` and appends; leaves the locks held (the caller
/// releases them).
pub(super) async fn locked(
    log: &EventLog,
    conn: &mut PgConnection,
    requests: &[&Request],
    stages: &mut GroupStages,
) -> anyhow::Result<Vec<Outcome>> {
    let mut lock_ids = BTreeSet::new();
    let mut event_ids = Vec::new();
    let mut aggregates = BTreeSet::new();
    for envelope in requests.iter().flat_map(|r| r.envelopes.iter()) {
        lock_ids.extend(lock_keys(&envelope.event).iter().map(|key| store::lock_id(key)));
        event_ids.push(envelope.event_id);
        aggregates.insert(envelope.aggregate_id());
    }
    let aggregates: Vec<String> = aggregates.into_iter().collect();
    let wanted = wanted(requests.iter().flat_map(|r| r.envelopes.iter().map(|e| &e.event)));
    let store::GroupRead { mut state, decisions } =
        store::lock_and_read(conn, &lock_ids, &wanted, &event_ids, &aggregates).await?;
    stages.lap(GroupStage::LockRead);
    let known: HashMap<Uuid, Option<LogPosition>> =
        decisions.iter().map(|d| (d.event_id, d.position)).collect();

    let mut verdicts = Vec::with_capacity(requests.len());
    let mut fresh: Vec<&Envelope> = Vec::new();
    // The span of the request each fresh envelope belongs to.
    let mut fresh_parents: Vec<tracing::Span> = Vec::new();
    let mut changed = Aggregates::default();
    for request in requests {
        if request.envelopes.iter().all(|e| known.contains_key(&e.event_id)) {
            verdicts.push(Verdict::Replay);
            continue;
        }
        match decide(&state, request) {
            Ok(after) => {
                verdicts.push(Verdict::New);
                fresh.extend(request.envelopes.iter());
                fresh_parents.extend(std::iter::repeat_n(request.span.clone(), request.envelopes.len()));
                changed.absorb(touched(&after, request.envelopes.iter().map(|e| &e.event)));
                state.absorb(after);
            }
            Err(rejections) => verdicts.push(Verdict::Rejected(rejections)),
        }
    }
    stages.lap(GroupStage::Decide);
    let encoded: Vec<Vec<u8>> = fresh.iter().map(|e| e.encode()).collect();
    if !fresh.is_empty() {
        let new: Vec<NewDecision<'_>> = fresh
            .iter()
            .zip(&encoded)
            .map(|(e, bytes)| NewDecision {
                event_id: e.event_id,
                aggregate: e.aggregate_id(),
                envelope: bytes,
            })
            .collect();
        store::save(conn, &changed, &new).await?;
    }
    stages.lap(GroupStage::Save);
    if !fresh.is_empty() && crash_before_append() {
        tracing::error!("EVENTLINE_TEST_CRASH_BEFORE_APPEND: dying between the state commit and the append");
        std::process::abort();
    }

    // Older pending decisions on these aggregates go first, so that the log keeps decision order.
    let pending: Vec<(Envelope, &[u8])> = decisions
        .iter()
        .filter_map(|d| d.pending_envelope.as_deref())
        .filter_map(|bytes| match Envelope::decode(bytes) {
            Ok(envelope) => Some((envelope, bytes)),
            Err(error) => {
                tracing::error!(%error, "A pending envelope cannot be decoded; it is skipped");
                None
            }
        })
        .collect();
    let resent = pending.len();
    let mut parents = vec![tracing::Span::current(); resent];
    parents.extend(fresh_parents);
    // Each event goes to the broker as the very bytes stored while it was pending.
    let to_append: Vec<Outgoing<'_>> = pending
        .iter()
        .map(|(envelope, bytes)| Outgoing { envelope, payload: bytes })
        .chain(fresh.iter().zip(&encoded).map(|(envelope, bytes)| Outgoing { envelope, payload: bytes }))
        .collect();
    let (positions, failure) = if to_append.is_empty() {
        (Vec::new(), None)
    } else {
        match log.append_traced(&to_append, &parents).await {
            Ok(positions) => (positions.into_iter().map(Some).collect(), None),
            Err(partial) => (partial.positions.clone(), Some(partial.error)),
        }
    };
    stages.lap(GroupStage::Append);
    let appended: Vec<(Uuid, LogPosition)> =
        to_append.iter().zip(&positions).filter_map(|(e, p)| p.map(|p| (e.envelope.event_id, p))).collect();
    if resent > 0 {
        tracing::info!(resent, "Appended pending decisions left by an interrupted append");
        crate::metrics::pending_resent(resent);
    }
    if !appended.is_empty()
        && let Err(error) = store::mark_appended(conn, &appended).await
    {
        // Still pending in the state: appended again later, a copy the projector ignores.
        tracing::warn!(%error, "Recording appended decisions failed");
    }
    stages.lap(GroupStage::Positions);
    let landed: HashMap<Uuid, LogPosition> =
        appended.into_iter().chain(known.iter().filter_map(|(id, p)| p.map(|p| (*id, p)))).collect();

    let failure = failure.map(|e| e.to_string());
    Ok(requests
        .iter()
        .zip(verdicts)
        .map(|(request, verdict)| match verdict {
            Verdict::Rejected(rejections) => Outcome::Rejected(rejections),
            Verdict::New | Verdict::Replay => {
                let found: Vec<Option<LogPosition>> =
                    request.envelopes.iter().map(|e| landed.get(&e.event_id).copied()).collect();
                if found.iter().all(Option::is_some) {
                    Outcome::Accepted(found.into_iter().flatten().collect())
                } else {
                    let cause = failure.clone().unwrap_or_else(|| "a pending event was not appended".into());
                    Outcome::NotAppended(PartialAppend::unavailable(cause, found))
                }
            }
        })
        .collect())
}

/// Fault injection for the crash tests (`EVENTLINE_TEST_CRASH_BEFORE_APPEND=true`): the process
/// dies right after committing a decision, before appending it. Compiled only with the
/// `fault-injection` feature, which the test builds turn on and no shipped build does.
#[cfg(feature = "fault-injection")]
fn crash_before_append() -> bool {
    static CRASH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CRASH.get_or_init(|| std::env::var("EVENTLINE_TEST_CRASH_BEFORE_APPEND").is_ok_and(|v| v == "true"))
}

/// Without the `fault-injection` feature the hook does not exist.
#[cfg(not(feature = "fault-injection"))]
fn crash_before_append() -> bool {
    false
}

/// Decides one request on a copy of the part of `state` it touches: that part after it (to
/// absorb into `state`), or every broken rule.
fn decide(state: &Aggregates, request: &Request) -> Result<Aggregates, Vec<(usize, Rejection)>> {
    if let Some((aggregate, version)) = &request.expect
        && let Err(rejection) = rules::check_version(state, aggregate, *version)
    {
        return Err(vec![(0, rejection)]);
    }
    let mut after = state.part_for(request.envelopes.iter().map(|e| &e.event));
    let mut rejections = Vec::new();
    for (i, envelope) in request.envelopes.iter().enumerate() {
        match rules::check(&after, &envelope.event) {
            Ok(()) => after.apply(&envelope.event),
            Err(rejection) => rejections.push((i, rejection)),
        }
    }
    if rejections.is_empty() { Ok(after) } else { Err(rejections) }
}

/// The aggregates `events` read or write.
fn wanted<'a>(events: impl Iterator<Item = &'a Event>) -> Wanted {
    let mut wanted = Wanted::default();
    for event in events {
        match event {
            Event::UserCreated(e) => {
                wanted.users.insert(e.user_id);
                wanted.emails.insert(super::model::email_key(&e.email));
            }
            Event::OrderPlaced(e) => {
                wanted.orders.insert(e.order_id);
                wanted.users.insert(e.user_id);
            }
            Event::PaymentSettled(e) => {
                wanted.orders.insert(e.order_id);
                wanted.payments.insert(e.payment_id);
            }
            Event::InventoryAdjusted(e) => {
                wanted.skus.insert(e.sku.clone());
            }
        }
    }
    wanted
}

/// The part of `state` that `events` wrote.
fn touched<'a>(state: &Aggregates, events: impl Iterator<Item = &'a Event>) -> Aggregates {
    let mut part = Aggregates::default();
    for event in events {
        match event {
            Event::UserCreated(e) => {
                if let Some(user) = state.users.get(&e.user_id) {
                    part.users.insert(e.user_id, user.clone());
                }
            }
            Event::OrderPlaced(e) => {
                if let Some(order) = state.orders.get(&e.order_id) {
                    part.orders.insert(e.order_id, order.clone());
                }
            }
            Event::PaymentSettled(e) => {
                if let Some(order) = state.orders.get(&e.order_id) {
                    part.orders.insert(e.order_id, order.clone());
                }
                part.payments.insert(e.payment_id, e.order_id);
            }
            Event::InventoryAdjusted(e) => {
                if let Some(sku) = state.skus.get(&e.sku) {
                    part.skus.insert(e.sku.clone(), sku.clone());
                }
            }
        }
    }
    part
}

impl PartialAppend {
    /// A failed append described by `cause`, with the positions of the events that did land.
    pub fn unavailable(cause: String, positions: Vec<Option<LogPosition>>) -> Self {
        PartialAppend { error: AppendError::NotConfirmed(cause), positions }
    }
}
