//! The OpenAPI 3.1 document of the command API, generated from the handlers the router serves
//! (utoipa). `docs/openapi/command.json` is a committed copy, checked for drift by a test.

use eventline_events::{AdjustmentType, Currency};
use eventline_runtime::auth::{self, Scope};
use eventline_runtime::problem::{Problem, ProblemMember};
use serde_json::{Value, json};
use utoipa::Number;
use utoipa::OpenApi;
use utoipa::openapi::schema::{Discriminator, Object, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Components, KnownFormat, Ref, RefOr, SchemaFormat};

use super::batch::{BATCH_COMMANDS, PathField};
use crate::decide::{self, ADJUSTMENT_TYPES, formats};
use crate::problems;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventline command API",
        description = "Commands of eventline, an event-sourced CQRS backend. Every accepted command is \
            durably appended to the event log before it is answered `202 Accepted`; the \
            `Consistency-Token` of the answer lets the query API wait until the read models show it.\n\n\
            Every error is `application/problem+json` (RFC 9457) with a stable `type`.\n\n\
            Send an `Idempotency-Key` to make retries safe: the same key with the same request returns \
            the same response (same ids, same event) without a second effect.\n\n\
            Send `Authorization: Bearer <token>` with one of the deployment's API tokens. Each client \
            (token) has a rate limit; over it, commands are answered `429` with `Retry-After`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        version = env!("CARGO_PKG_VERSION"),
    ),
    servers((url = "http://127.0.0.1:8081", description = "Local stack (`make up`)")),
    tags(
        (name = "users", description = "Users"),
        (name = "orders", description = "Orders and their payments"),
        (name = "inventory", description = "Stock per sku"),
        (name = "batch", description = "Many commands in one request"),
    ),
    // The 202 bodies: `CommandAccepted` and `BatchAccepted` reference them, and utoipa collects
    // schemas only from `body = …`.
    components(schemas(Problem, super::Accepted, super::BatchAccepted, super::Position)),
)]
pub struct ApiDoc;

/// The `202` of a single command.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 202,
    description = "Durably appended to the event log",
    headers(("Consistency-Token" = String, description = "Log position(s) to pass to the query API to read this write"))
)]
#[allow(dead_code)]
pub struct CommandAccepted(super::Accepted);

/// The `202` of a batch.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 202,
    description = "All durably appended to the event log",
    headers(("Consistency-Token" = String, description = "Log positions to pass to the query API to read these writes"))
)]
#[allow(dead_code)]
pub struct BatchAccepted(super::BatchAccepted);

/// The problem responses every command endpoint can give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum CommandProblems {
    /// Malformed JSON, an unreadable body, or an invalid `Idempotency-Key` or `If-Match` header.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// `SettlePayment`: the order does not exist (`order-not-found`).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// A business rule refused the command against what the log holds, and nothing was appended
    /// (`user-exists`, `email-taken`, `order-exists`, `unknown-user`, `order-already-paid`,
    /// `payment-exists`, `payment-currency-mismatch`, `payment-amount-mismatch`,
    /// `insufficient-stock` with `available`, `stock-limit`, `batch-rejected` listing each failing
    /// command), or a request with this `Idempotency-Key` is still being processed
    /// (`idempotency-in-progress`; retry shortly).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// `If-Match` named a version the aggregate has moved past (`version-mismatch`, with
    /// `currentVersion`); read it again and decide anew.
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Problem),
    /// The body did not arrive in time after the headers (`request-timeout`); nothing was done.
    #[response(status = 408, content_type = "application/problem+json")]
    RequestTimeout(Problem),
    /// The body is over the endpoint's size limit (64 KiB; 4 MiB for a batch).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not sent as `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Invalid fields (listed in `errors`; no state of the log could accept them), or an
    /// `Idempotency-Key` already used for another request (`idempotency-key-reused`, as the IETF
    /// draft on the header says). Nothing was appended.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// This client sent more commands than its rate limit allows; `Retry-After` says when to retry.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// The event log did not acknowledge in time (not confirmed: retry with the same
    /// `Idempotency-Key` to make it take effect exactly once), the decision state is unavailable
    /// or being rebuilt (nothing decided), or Redis is down for a request with an
    /// `Idempotency-Key`. `Retry-After` says when to retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The `Idempotency-Key` request header.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// 1-255 visible ASCII characters. The same key with the same request returns the same
    /// response for 24 h; with another request it is refused (422).
    #[param(rename = "Idempotency-Key", nullable = false, pattern = "^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
}

/// The `If-Match` request header of commands on one aggregate.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatch {
    /// The aggregate's version as the query API's `ETag` gives it, in double quotes (`"3"`): the
    /// command is decided only if the aggregate is still at that version, else `412`. Empty is
    /// the same as no header.
    #[param(rename = "If-Match", nullable = false, pattern = "^$|^\"[0-9]{1,18}\"$")]
    if_match: Option<String>,
}

/// Finishes the generated document with what utoipa's derives cannot say: a schema per
/// adjustment type, a schema per batch command, the links between operations, and the exact
/// syntax the decisions check.
pub fn finish(mut document: utoipa::openapi::OpenApi) -> Value {
    if let Some(components) = document.components.as_mut() {
        split_adjustment_types(components);
        compose_batch_commands(components);
    }
    describe_consistency_tokens(&mut document);
    super::links::declare(&mut document);
    // Every command takes the `write` scope.
    auth::openapi::declare(&mut document, |_, _| Some(Scope::Write));
    ProblemMember::declare(&mut document, &[problems::AVAILABLE, problems::CURRENT_VERSION]);
    let mut document = serde_json::to_value(document).unwrap_or_default();
    describe_formats(&mut document);
    // The batch body is parsed by hand (`batch::Batch`, which denies unknown fields), so its
    // schema type does not say the object is closed.
    document["components"]["schemas"]["BatchRequest"]["additionalProperties"] = false.into();
    document
}

/// The schemas that describe answers, not requests.
const ANSWERS: [&str; 5] = ["Accepted", "BatchAccepted", "Position", "Problem", "FieldError"];
const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// States what the decisions check beyond each field's own schema (which comes from its type,
/// `decide::fields`): per currency, how many fraction digits its amounts may have (`if`/`then` on
/// the currency, JSON Schema 2020-12), the accepted currencies (the one `Currency` schema the
/// fields refer to), and that no id is the nil UUID.
fn describe_formats(document: &mut Value) {
    let currencies: Vec<Currency> = Currency::all().collect();
    let mut digits: Vec<u32> = currencies.iter().map(Currency::fraction_digits).collect();
    digits.sort_unstable();
    digits.dedup();
    let codes = |d: u32| -> Vec<&str> {
        currencies.iter().filter(|c| c.fraction_digits() == d).map(Currency::code).collect()
    };
    if let Some(schemas) = document.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for (name, schema) in schemas.iter_mut().filter(|(name, _)| !ANSWERS.contains(&name.as_str())) {
            let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
                continue;
            };
            for property in properties.values_mut() {
                if property["format"] == "uuid" {
                    property["not"] = json!({ "const": NIL_UUID });
                }
            }
            // Where the amounts are, relative to the object that holds the currency.
            let amounts = if properties.contains_key("amount") {
                |pattern: String| json!({ "properties": { "amount": { "pattern": pattern } } })
            } else if name.ends_with("PlaceOrder") {
                |pattern: String| json!({ "properties": { "items": { "items": { "properties": { "price": { "pattern": pattern } } } } } })
            } else {
                continue;
            };
            let rules: Vec<Value> = digits
                .iter()
                .map(|&d| {
                    json!({
                        "if": { "properties": { "currency": { "enum": codes(d) } }, "required": ["currency"] },
                        "then": amounts(formats::fraction_pattern(d)),
                    })
                })
                .collect();
            schema["allOf"] = Value::Array(rules);
        }
    }
    for parameter in document["paths"].as_object_mut().into_iter().flat_map(|paths| paths.values_mut()) {
        for operation in parameter.as_object_mut().into_iter().flat_map(|item| item.values_mut()) {
            for parameter in operation["parameters"].as_array_mut().into_iter().flatten() {
                if parameter["schema"]["format"] == "uuid" {
                    parameter["schema"]["not"] = json!({ "const": NIL_UUID });
                }
            }
        }
    }
}

/// Gives the `Consistency-Token` answer header its grammar (utoipa's `headers(...)` takes a type,
/// not a pattern); the query API's request header carries the same one.
fn describe_consistency_tokens(document: &mut utoipa::openapi::OpenApi) {
    let operations = document.paths.paths.values_mut().filter_map(|item| item.post.as_mut());
    for answer in operations.flat_map(|operation| operation.responses.responses.values_mut()) {
        if let RefOr::T(answer) = answer
            && let Some(header) = answer.headers.get_mut("Consistency-Token")
        {
            header.schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(eventline_events::CONSISTENCY_TOKEN_PATTERN))
                .into();
        }
    }
}

/// Describes each adjustment type with a schema of its own (`quantity` may be 0 only for `set`),
/// and `AdjustInventory` as their union with `adjustmentType` as discriminator, so that generated
/// clients and fuzzers know the rule. The request is still parsed as one struct, whose rule is
/// `decide::quantity_range`.
fn split_adjustment_types(components: &mut Components) {
    const NAME: &str = "AdjustInventory";
    let Some(RefOr::T(Schema::Object(common))) = components.schemas.get(NAME).cloned() else { return };
    let mut union = OneOfBuilder::new().description(Some(
        "Body of `POST /inventory/{sku}/adjustments` (the sku comes from the path): `adjustmentType` \
         picks the schema. `add` and `remove` change the stock by `quantity` (at least 1), `set` sets it \
         (0 or more).",
    ));
    let mut discriminator = Discriminator::new("adjustmentType");
    for (kind, adjustment) in ADJUSTMENT_TYPES {
        let mut variant = common.clone();
        let tag = one_value(kind);
        variant.properties.insert("adjustmentType".to_owned(), tag.into());
        let range = decide::quantity_range(adjustment);
        if let Some(RefOr::T(Schema::Object(quantity))) = variant.properties.get_mut("quantity") {
            quantity.minimum = Some(Number::Int(*range.start() as isize));
            quantity.maximum = Some(Number::Int(*range.end() as isize));
            quantity.description = Some(
                match adjustment {
                    AdjustmentType::Add => "Units to add.",
                    AdjustmentType::Remove => {
                        "Units to remove; refused with `insufficient-stock` below zero."
                    }
                    AdjustmentType::Set => "The new stock level.",
                }
                .to_owned(),
            );
        }
        variant.description =
            Some(format!("`POST /inventory/{{sku}}/adjustments` with `adjustmentType` `{kind}`."));
        let name = format!("{NAME}{}", capitalized(kind));
        discriminator.mapping.insert(kind.to_owned(), schema_ref(&name));
        union = union.item(RefOr::Ref(Ref::from_schema_name(&name)));
        components.schemas.insert(name, RefOr::T(Schema::Object(variant)));
    }
    let union = union.discriminator(Some(discriminator)).build();
    components.schemas.insert(NAME.to_owned(), RefOr::T(Schema::OneOf(union)));
}

/// Gives every batch command a schema of its own: the body of its endpoint (a closed object) with
/// `type` and the endpoint's path fields added, and `BatchCommand` as the union of them with `type`
/// as discriminator. A body that is itself a union (`AdjustInventory`) becomes a union of batch
/// commands with the same discriminator. Composing with `allOf` instead would be unsatisfiable (a
/// closed object admits no `type`), and client generators handle flat objects best.
fn compose_batch_commands(components: &mut Components) {
    let mut union = OneOfBuilder::new().description(Some(
        "One command of a batch: `type` names it; the other fields are the body of its own endpoint, \
         plus the id that endpoint takes from its path.",
    ));
    let mut discriminator = Discriminator::new("type");
    for (kind, path_field) in BATCH_COMMANDS {
        let name = format!("Batch{kind}");
        let composed = match components.schemas.get(kind).cloned() {
            Some(RefOr::T(Schema::Object(object))) => Schema::Object(batch_command(object, kind, path_field)),
            Some(RefOr::T(Schema::OneOf(variants))) => {
                let Some(mut inner) = variants.discriminator.clone() else { continue };
                let mut batch_union = OneOfBuilder::new().description(Some(format!(
                    "`{kind}`: {}",
                    variants.description.clone().unwrap_or_default()
                )));
                for target in inner.mapping.values_mut() {
                    let variant = target.rsplit('/').next().unwrap_or_default().to_owned();
                    let Some(RefOr::T(Schema::Object(object))) = components.schemas.get(&variant).cloned()
                    else {
                        continue;
                    };
                    let batch_name = format!("Batch{variant}");
                    components.schemas.insert(
                        batch_name.clone(),
                        RefOr::T(Schema::Object(batch_command(object, kind, path_field))),
                    );
                    batch_union = batch_union.item(RefOr::Ref(Ref::from_schema_name(&batch_name)));
                    *target = schema_ref(&batch_name);
                }
                Schema::OneOf(batch_union.discriminator(Some(inner)).build())
            }
            _ => continue,
        };
        discriminator.mapping.insert(kind.to_owned(), schema_ref(&name));
        union = union.item(RefOr::Ref(Ref::from_schema_name(&name)));
        components.schemas.insert(name, RefOr::T(composed));
    }
    let union = union.discriminator(Some(discriminator)).build();
    components.schemas.insert("BatchCommand".to_owned(), RefOr::T(Schema::OneOf(union)));
}

/// One command's body as a batch command: `type` first, the path field last.
fn batch_command(mut object: Object, kind: &str, path_field: Option<PathField>) -> Object {
    let tag = one_value(kind);
    object.properties.insert("type".to_owned(), tag.into());
    object.required.insert(0, "type".to_owned());
    if let Some(field) = path_field {
        let (name, schema): (_, RefOr<Schema>) = match field {
            PathField::OrderId => (
                "orderId",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .into(),
            ),
            PathField::Sku => ("sku", <decide::fields::Sku as utoipa::PartialSchema>::schema()),
        };
        object.properties.insert(name.to_owned(), schema);
        object.required.push(name.to_owned());
    }
    object.description = Some(format!("`{kind}`: {}", object.description.unwrap_or_default()));
    object
}

/// A string schema admitting only `value` (a discriminator's tag).
fn one_value(value: &str) -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some([value])).build()
}

fn schema_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
