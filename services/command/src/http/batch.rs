//! `POST /commands/batch`: up to 1000 commands, all validated first, appended together.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use eventline_events::Event;
use eventline_runtime::problem::{FieldError, JsonBody, Problem, parse_value};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Decided, RequestTarget, execute};
use crate::decide::{self, Errors, IdGen};

/// Most commands in one batch.
pub const MAX_BATCH: usize = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(batch))
}

/// `{commands: [{type, ...}]}`; each command is the body of its single endpoint plus `type`
/// (`CreateUser`, `PlaceOrder`, `SettlePayment` with `orderId`, `AdjustInventory` with `sku`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    commands: Vec<Value>,
}

/// Run many commands at once
///
/// Every command is validated before any is appended (one invalid command refuses the whole
/// batch, with every invalid field listed); then all are appended together and the answer carries
/// one result per command and one `Consistency-Token` covering them all.
#[utoipa::path(
    post, path = "/commands/batch", tag = "batch", request_body = BatchRequest,
    params(super::openapi::IdempotencyKey),
    responses(super::openapi::BatchAccepted, super::openapi::CommandProblems)
)]
pub async fn batch(
    State(state): State<AppState>,
    target: RequestTarget,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    execute(&state, &headers, &target, body, |body, ids| {
        let batch: Batch = body.parse()?;
        if batch.commands.is_empty() || batch.commands.len() > MAX_BATCH {
            return Err(Problem::validation(vec![FieldError::new(
                "commands",
                format!("must hold 1 to {MAX_BATCH} commands"),
            )]));
        }
        let mut events = Vec::with_capacity(batch.commands.len());
        let mut errors = Vec::new();
        for (i, command) in batch.commands.into_iter().enumerate() {
            match decide_one(command, &format!("commands[{i}]."), ids) {
                Ok(event) => events.push(event),
                Err(mut invalid) => errors.append(&mut invalid),
            }
        }
        if errors.is_empty() { Ok(Decided::Batch(events)) } else { Err(Problem::validation(errors)) }
    })
    .await
}

/// Decides one command of a batch; errors carry `prefix` (`commands[3].`).
fn decide_one(command: Value, prefix: &str, ids: &mut IdGen) -> Result<Event, Vec<FieldError>> {
    let Value::Object(mut fields) = command else {
        return Err(vec![FieldError::new(prefix.trim_end_matches('.'), "must be an object with a `type`")]);
    };
    let kind = match fields.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(vec![FieldError::new(format!("{prefix}type"), TYPE_HELP)]),
    };
    // Commands addressed by path in their own endpoint carry that id in the body here.
    let mut take = |name: &str| match fields.remove(name) {
        Some(Value::String(value)) => Ok(value),
        _ => Err(vec![FieldError::new(format!("{prefix}{name}"), "is required and must be a string")]),
    };
    let errors = || Errors::within(prefix);
    match kind.as_str() {
        "CreateUser" => decide::create_user(parse(fields, prefix)?, ids, errors()),
        "PlaceOrder" => decide::place_order(parse(fields, prefix)?, ids, errors()),
        "SettlePayment" => {
            let order_id = take("orderId")?;
            decide::settle_payment(&order_id, parse(fields, prefix)?, ids, errors())
        }
        "AdjustInventory" => {
            let sku = take("sku")?;
            decide::adjust_inventory(&sku, parse(fields, prefix)?, errors())
        }
        _ => Err(vec![FieldError::new(format!("{prefix}type"), TYPE_HELP)]),
    }
}

// For the OpenAPI document only: the body is parsed by hand above, so that every command's errors
// are reported with its index.
/// Body of `POST /commands/batch`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchRequest {
    /// 1 to 1000 commands.
    #[schema(min_items = 1, max_items = 1000)]
    commands: Vec<BatchCommand>,
}

/// One command of a batch. Its schema is composed in `openapi.rs` from the commands' own bodies
/// (see `compose_batch_commands`); this type only names it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchCommand;

/// The commands a batch can hold: each `type` is also the name of its endpoint's body schema, and
/// some take a path parameter that a batch command carries in its body.
pub const BATCH_COMMANDS: [(&str, Option<PathField>); 4] = [
    ("CreateUser", None),
    ("PlaceOrder", None),
    ("SettlePayment", Some(PathField::OrderId)),
    ("AdjustInventory", Some(PathField::Sku)),
];

/// A path parameter carried in the body of a batch command.
#[derive(Debug, Clone, Copy)]
pub enum PathField {
    OrderId,
    Sku,
}

const TYPE_HELP: &str = "must be one of CreateUser, PlaceOrder, SettlePayment, AdjustInventory";

fn parse<T: serde::de::DeserializeOwned>(
    fields: serde_json::Map<String, Value>,
    prefix: &str,
) -> Result<T, Vec<FieldError>> {
    parse_value(Value::Object(fields), prefix).map_err(|e| vec![e])
}
