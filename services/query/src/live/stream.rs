//! One live stream: the subject's current state, `caught-up`, then a `change` per event with the
//! state after it; `reset` and the current state again when the client fell too far behind.
//!
//! Every `state` and `change` carries as its SSE id the consistency token of what the client has
//! seen: per partition, the newest position of the subject's events it was sent. A client that
//! reconnects with it as `Last-Event-ID` is sent exactly the events after it (from the event
//! index), then `caught-up`, then the live changes; changes the token covers are dropped, so
//! nothing arrives twice and nothing is skipped across a reconnect.
//!
//! The state of an order or a sku is folded, change by change, with the projection's rules
//! (`eventline_read_models::fold`), so each change carries the state at exactly that version. A
//! user's document (figures, latest orders) is not folded: each change carries the document as
//! stored when it is sent, which includes that change and may include later ones.

use axum::response::sse::Event as SseEvent;
use eventline_events::ConsistencyToken;
use eventline_read_models::documents::{self, Stock, User};
use eventline_read_models::fold::{OrderFold, StockFold};
use eventline_read_models::history::{self, Aggregate, HistoryEvent, Until};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use super::{Changes, Lost, Subscription};

/// What a stream sends on: the SSE response's channel. A client that stops reading fills it,
/// and then the stream waits while its subscription falls behind (and is reset).
pub type Out = mpsc::Sender<SseEvent>;

/// The data of a `state` event: the subject as it is now (`null` while it does not exist).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveState<T> {
    /// The consistency token of this state (also the SSE id): send it as `Last-Event-ID` to resume.
    pub token: String,
    pub state: Option<T>,
}

/// The data of a `change` event: one event of the subject and the state after it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveChange<T> {
    /// The consistency token after this change (also the SSE id).
    pub token: String,
    pub event: HistoryEvent,
    pub state: Option<T>,
}

/// The data of a `caught-up` event: everything up to `token` has been sent; changes follow live.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaughtUp {
    pub token: String,
}

/// The data of a `reset` event: the client fell behind by more than its buffer; `missed` changes
/// were dropped for it, and the current state follows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reset {
    pub missed: u64,
}

/// The state a stream keeps of its subject.
enum View {
    Stock(StockFold),
    Order(OrderFold),
    /// A user's document as last read.
    User(Option<User>),
}

/// Why a stream ended.
enum Ended {
    /// The client went away.
    Gone,
    /// The database failed; the client reconnects with its last id.
    Failed(sqlx::Error),
}

impl From<sqlx::Error> for Ended {
    fn from(error: sqlx::Error) -> Ended {
        Ended::Failed(error)
    }
}

/// Runs one stream of `subject` until the client goes away: from `resume` (a `Last-Event-ID`) or
/// from the current state.
pub async fn run(
    db: PgPool,
    changes: Changes,
    subject: Aggregate,
    resume: Option<ConsistencyToken>,
    out: Out,
) {
    let _open = Open::count();
    let subscription = changes.subscribe(subject.clone());
    let mut stream = Stream { db, subject, out, token: ConsistencyToken::new(), view: None };
    if let Err(Ended::Failed(error)) = stream.serve(subscription, resume).await {
        tracing::warn!(%error, "A live stream ended: the read models cannot be read");
    }
}

/// Counts a stream as open while it lives, however it ends (the service stopping drops it).
struct Open;

impl Open {
    fn count() -> Open {
        crate::metrics::live_streams(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::metrics::live_streams(-1.0);
    }
}

struct Stream {
    db: PgPool,
    subject: Aggregate,
    out: Out,
    /// What the client has seen.
    token: ConsistencyToken,
    view: Option<View>,
}

impl Stream {
    async fn serve(
        &mut self,
        mut subscription: Subscription,
        resume: Option<ConsistencyToken>,
    ) -> Result<(), Ended> {
        // Subscribed first, read second: whatever commits after the read arrives as a change.
        match resume {
            Some(token) => self.resume(token).await?,
            None => self.current().await?,
        }
        loop {
            let next = tokio::select! {
                // A client gone while nothing changes ends its stream now, not at the next change.
                () = self.out.closed() => return Err(Ended::Gone),
                next = subscription.next() => next,
            };
            match next {
                Ok(change) => {
                    let position = change.event.position();
                    if self
                        .token
                        .positions()
                        .any(|p| p.partition == position.partition && p.offset >= position.offset)
                    {
                        continue;
                    }
                    self.apply(&change.event).await?;
                }
                Err(Lost::Behind(missed)) => {
                    crate::metrics::live_reset();
                    self.send(event("reset", None, &Reset { missed })).await?;
                    self.current().await?;
                }
                Err(Lost::Ended) => return Ok(()),
            }
        }
    }

    /// Sends the current state and its token, read in one snapshot, then `caught-up`.
    async fn current(&mut self) -> Result<(), Ended> {
        let mut tx = self.db.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        self.view = Some(read_view(&mut tx, &self.subject, Until::ALL).await?);
        self.token = history::token_of(&mut *tx, &self.subject).await?;
        tx.commit().await?;
        let data = self.state_data();
        self.send(event("state", Some(&self.token), &data)).await?;
        self.caught_up().await
    }

    /// Sends every event of the subject after `token`, each with the state after it, then
    /// `caught-up`.
    async fn resume(&mut self, token: ConsistencyToken) -> Result<(), Ended> {
        let mut tx = self.db.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let missed = history::after_token(&mut *tx, &self.subject, &token).await?;
        // The fold starts from the state the token describes: every event it covers.
        let covered = missed.first().map_or(Until::ALL, |e| Until::version(e.version - 1));
        let until = match self.subject {
            Aggregate::User(_) => Until::ALL,
            _ => covered,
        };
        self.view = Some(read_view(&mut tx, &self.subject, until).await?);
        tx.commit().await?;
        self.token = token;
        for event in &missed {
            self.apply(event).await?;
        }
        self.caught_up().await
    }

    /// Folds one new event into the view and sends it with the new state.
    async fn apply(&mut self, indexed: &HistoryEvent) -> Result<(), Ended> {
        let decoded = decoded(indexed)?;
        match &mut self.view {
            Some(View::Stock(fold)) => fold.apply(&decoded, indexed.occurred_at),
            Some(View::Order(fold)) => fold.apply(&decoded, indexed.occurred_at),
            Some(View::User(_)) | None => {
                let mut conn = self.db.acquire().await?;
                self.view = Some(read_view(&mut conn, &self.subject, Until::ALL).await?);
            }
        }
        self.token.include(indexed.position());
        let token = self.token.to_string();
        let sse = match &self.view {
            Some(View::Stock(fold)) => event(
                "change",
                Some(&self.token),
                &LiveChange { token, event: indexed.clone(), state: fold.state() },
            ),
            Some(View::Order(fold)) => event(
                "change",
                Some(&self.token),
                &LiveChange { token, event: indexed.clone(), state: fold.state() },
            ),
            Some(View::User(user)) => event(
                "change",
                Some(&self.token),
                &LiveChange { token, event: indexed.clone(), state: user.as_ref() },
            ),
            None => return Ok(()),
        };
        self.send(sse).await
    }

    async fn caught_up(&self) -> Result<(), Ended> {
        self.send(event("caught-up", None, &CaughtUp { token: self.token.to_string() })).await
    }

    fn state_data(&self) -> serde_json::Value {
        let token = self.token.to_string();
        let data = match &self.view {
            Some(View::Stock(fold)) => serde_json::to_value(LiveState { token, state: fold.state() }),
            Some(View::Order(fold)) => serde_json::to_value(LiveState { token, state: fold.state() }),
            Some(View::User(user)) => serde_json::to_value(LiveState { token, state: user.as_ref() }),
            None => serde_json::to_value(LiveState::<()> { token, state: None }),
        };
        data.unwrap_or_default()
    }

    async fn send(&self, event: SseEvent) -> Result<(), Ended> {
        self.out.send(event).await.map_err(|_| Ended::Gone)
    }
}

/// The subject's state up to `until`: a fold of an order's or a sku's events (a sku's current
/// stock is read from its row, at its version, rather than folded from its whole history), or a
/// user's document.
async fn read_view(conn: &mut PgConnection, subject: &Aggregate, until: Until) -> sqlx::Result<View> {
    match subject {
        Aggregate::Inventory(sku) if until == Until::ALL => {
            let stock: Option<Stock> = sqlx::query_as(crate::http::statements::STOCK_SQL)
                .bind(sku)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(View::Stock(stock.map(StockFold::from).unwrap_or_default()))
        }
        Aggregate::Inventory(_) => {
            let mut fold = StockFold::default();
            for event in history::up_to(&mut *conn, subject, until).await? {
                fold.apply(&decoded(&event)?, event.occurred_at);
            }
            Ok(View::Stock(fold))
        }
        Aggregate::Order(_) => {
            let mut fold = OrderFold::default();
            for event in history::up_to(&mut *conn, subject, until).await? {
                fold.apply(&decoded(&event)?, event.occurred_at);
            }
            Ok(View::Order(fold))
        }
        Aggregate::User(user_id) => {
            let users =
                documents::assemble_users(&mut *conn, &[*user_id], documents::STORED_ORDERS_LIMIT).await?;
            Ok(View::User(users.into_iter().next()))
        }
    }
}

fn decoded(event: &HistoryEvent) -> sqlx::Result<eventline_events::Event> {
    event.event().map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// An SSE event of `kind` with `data` as JSON, and `token` as its id when it has one.
fn event(kind: &str, token: Option<&ConsistencyToken>, data: &impl Serialize) -> SseEvent {
    let mut sse = SseEvent::default().event(kind);
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        sse = sse.id(token.to_string());
    }
    sse.json_data(data).unwrap_or_else(|_| SseEvent::default().comment("unserializable"))
}
