//! `GET /orders/{id}/live`, `GET /inventory/{sku}/live`, `GET /users/{id}/live`: Server-Sent
//! Events, the subject's state and then its changes as they are applied (`crate::live`).

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use eventline_read_models::Projection;
use eventline_read_models::history::Aggregate;
use eventline_runtime::problem::Problem;
use futures::Stream;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{OrderId, ReadAfter, ResumeAfter, Sku, UserId};
use crate::live::stream::{self, CaughtUp, LiveChange, LiveState, Reset};
use eventline_read_models::documents::{Order, Stock, User};

/// Events waiting to be written to one client; beyond this the stream waits for the client, and
/// its place in the feed (`EVENTLINE_LIVE_BUFFER` changes) is what bounds how far behind it falls.
const PENDING: usize = 16;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(order_live)).routes(routes!(sku_live)).routes(routes!(user_live))
}

/// The `Last-Event-ID` request header.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct LastEventIdHeader {
    /// The id of the last event received (a consistency token): the stream resumes after it,
    /// sending every change since, then `caught-up`. Browsers' `EventSource` sends it by itself
    /// when it reconnects.
    #[param(
        rename = "Last-Event-ID",
        nullable = false,
        pattern = r"^$|^[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18}){0,1023}$"
    )]
    last_event_id: Option<String>,
}

/// The events a live stream sends, one schema per SSE `event` name. Each arrives as
/// `event: <name>`, `id: <token>` (on `state` and `change`) and `data: <JSON>`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LiveEvents<T> {
    /// `state`: the subject now (first, and after a `reset`).
    State(LiveState<T>),
    /// `change`: one event and the state after it.
    Change(LiveChange<T>),
    /// `caught-up`: everything so far was sent (after the first state and after a resume).
    CaughtUp(CaughtUp),
    /// `reset`: the client fell too far behind; the current state follows.
    Reset(Reset),
}

/// Follow an order: its state, then every change (Server-Sent Events)
#[utoipa::path(
    get, path = "/orders/{id}/live", tag = "orders",
    params(("id" = Uuid, Path, description = "The order id"), LastEventIdHeader, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "Server-Sent Events: `state`, `caught-up`, then a `change` per event of the order \
            (its placement, its payment); `reset` and `state` if the client falls too far behind. A comment every \
            15 s keeps proxies from closing the stream. An order that does not exist yet has the state `null`.",
         content_type = "text/event-stream", body = LiveEvents<Order>),
        super::openapi::ReadProblems,
    )
)]
pub async fn order_live(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    resume: ResumeAfter,
    after: ReadAfter,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    live(&state, Aggregate::Order(order_id), resume, after).await
}

/// Follow a sku's stock: its state, then every adjustment (Server-Sent Events)
#[utoipa::path(
    get, path = "/inventory/{sku}/live", tag = "inventory",
    params(("sku" = String, Path, description = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
           LastEventIdHeader, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "Server-Sent Events: `state`, `caught-up`, then a `change` per adjustment with the \
            stock after it; `reset` and `state` if the client falls too far behind. A comment every 15 s keeps \
            proxies from closing the stream. A sku never adjusted has the state `null`.",
         content_type = "text/event-stream", body = LiveEvents<Stock>),
        super::openapi::ReadProblems,
    )
)]
pub async fn sku_live(
    State(state): State<AppState>,
    Sku(sku): Sku,
    resume: ResumeAfter,
    after: ReadAfter,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    live(&state, Aggregate::Inventory(sku), resume, after).await
}

/// Follow a user: their document, then every change to it (Server-Sent Events)
#[utoipa::path(
    get, path = "/users/{id}/live", tag = "users",
    params(("id" = Uuid, Path, description = "The user id"), LastEventIdHeader, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "Server-Sent Events: `state`, `caught-up`, then a `change` per event of the user \
            or of an order they placed, with the user's document as stored when it is sent; `reset` and `state` if \
            the client falls too far behind. A comment every 15 s keeps proxies from closing the stream. A user who \
            does not exist yet has the state `null`.",
         content_type = "text/event-stream", body = LiveEvents<User>),
        super::openapi::ReadProblems,
    )
)]
pub async fn user_live(
    State(state): State<AppState>,
    UserId(user_id): UserId,
    resume: ResumeAfter,
    after: ReadAfter,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    live(&state, Aggregate::User(user_id), resume, after).await
}

/// Starts a stream of `subject`. A `Last-Event-ID` is a consistency token: the stream waits (as a
/// read with that token would) until the read models have applied it, then resumes after it.
async fn live(
    state: &AppState,
    subject: Aggregate,
    ResumeAfter(resume): ResumeAfter,
    after: ReadAfter,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, Problem> {
    // Resuming, the stream reads after the last event its client had, as a read with that token.
    let after = resume.clone().map_or(after, |token| ReadAfter(Some(token)));
    let db = state.read_models(Projection::Main, &after).await?;
    let (out, events) = mpsc::channel(PENDING);
    let live = state.live.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = stream::run(db, live.changes, subject, resume, out) => {}
            () = live.stopping.cancelled() => {}
        }
    });
    let events = futures::stream::unfold(events, |mut events| async move {
        let event = events.recv().await?;
        Some((Ok(event), events))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.live.heartbeat)))
}
