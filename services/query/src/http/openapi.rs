//! The OpenAPI 3.1 document of the query API, generated from the handlers the router serves
//! (utoipa). `docs/openapi/query.json` is a committed copy, checked for drift by a test.

use eventline_runtime::problem::Problem;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventline query API",
        description = "Read models of eventline, an event-sourced CQRS backend: users with their orders, \
            orders with their payment, stock per sku.\n\n\
            Pass the `Consistency-Token` the command API returned to read your own writes: the answer \
            waits until the read models reflect those writes (2 s at most by default), or is `503` with \
            `Retry-After`. Every `200` carries an `ETag`; send it back in `If-None-Match` for a `304`.\n\n\
            Money is a decimal string; times are RFC 3339 in UTC. Every error is \
            `application/problem+json` (RFC 9457) with a stable `type`. Each client (address) has a rate \
            limit; over it, reads are answered `429` with `Retry-After`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        version = env!("CARGO_PKG_VERSION"),
    ),
    servers((url = "http://127.0.0.1:8082", description = "Local stack (`make up`)")),
    tags(
        (name = "users", description = "Users and their orders"),
        (name = "orders", description = "Orders with items and payment"),
        (name = "inventory", description = "Stock per sku"),
    ),
    components(schemas(Problem))
)]
pub struct ApiDoc;

/// The problem responses every read can give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadProblems {
    /// A malformed id, query parameter, cursor or Consistency-Token.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No such resource.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// A Consistency-Token this event log has not issued (`impossible-consistency-token`: a
    /// partition it does not have, or an offset at or beyond the end of its partition); refused
    /// at once instead of waited for.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// This client (address) made more reads than its rate limit allows; `Retry-After` says
    /// when to retry.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// The projection has not reached the Consistency-Token within the bound
    /// (`projection-behind`), the read took longer than its limit (`read-timeout`), the database
    /// is unavailable, the read models belong to another
    /// event log than the broker serves (`read-models-from-another-log`), or the aggregate's events
    /// are parked behind one the read models refused (`aggregate-parked`). `Retry-After` says when
    /// to retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The `Consistency-Token` request header.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ConsistencyTokenHeader {
    /// As returned by the command API (`partition:offset` pairs, e.g. `0:15,3:7`): the answer
    /// reflects at least those writes. Empty is the same as no header.
    #[param(
        rename = "Consistency-Token",
        nullable = false,
        pattern = r"^$|^[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18}){0,1023}$"
    )]
    consistency_token: Option<String>,
}
