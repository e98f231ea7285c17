//! The links between the command API's operations (OpenAPI `links`): which answer feeds which next
//! command, so that client generators and schemathesis' stateful phase follow the flows a client
//! follows. Links into the query API are in the combined document (`docs/openapi/eventline.json`).

use eventline_runtime::openapi::{add_link, link};
use serde_json::json;
use utoipa::openapi::OpenApi;

pub fn declare(document: &mut OpenApi) {
    let place_order = link(
        "place_order",
        "Place an order for the user just created.",
        &[],
        Some(json!({"userId": "$response.body#/userId"})),
    );
    add_link(document, "create_user", "202", "PlaceOrder", place_order);
    let settle_payment = link(
        "settle_payment",
        "Pay the order just placed: its total, in its currency.",
        &[("path.orderId", "$response.body#/orderId")],
        Some(json!({"amount": "$response.body#/totalAmount", "currency": "$response.body#/currency"})),
    );
    add_link(document, "place_order", "202", "SettlePayment", settle_payment);
}
