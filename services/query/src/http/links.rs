//! The links between the query API's operations (OpenAPI `links`): from a user to its orders and
//! back, and from one page of orders to the next, so that client generators and schemathesis'
//! stateful phase follow them. Links from the command API's answers to these reads are in the
//! combined document (`docs/openapi/eventline.json`).

use eventline_runtime::openapi::{add_link, link};
use utoipa::openapi::OpenApi;

pub fn declare(document: &mut OpenApi) {
    let latest_order = link(
        "get_order",
        "The user's most recent order.",
        &[("path.id", "$response.body#/orders/0/orderId")],
        None,
    );
    add_link(document, "get_user", "200", "GetLatestOrder", latest_order);
    let orders = link(
        "list_orders",
        "All of the user's orders, a page at a time.",
        &[("path.id", "$response.body#/userId")],
        None,
    );
    add_link(document, "get_user", "200", "ListOrders", orders);
    let next_page = link(
        "list_orders",
        "The next page, while `nextCursor` is not null.",
        &[("path.id", "$request.path.id"), ("query.cursor", "$response.body#/nextCursor")],
        None,
    );
    add_link(document, "list_orders", "200", "NextPage", next_page);
    // Orders by status: each listed order, and the next page with the same filters.
    let first = link(
        "get_order",
        "The first order of the page.",
        &[("path.id", "$response.body#/orders/0/orderId")],
        None,
    );
    add_link(document, "list_orders_by_status", "200", "GetFirstOrder", first);
    let next_page = link(
        "list_orders_by_status",
        "The next page, while `nextCursor` is not null.",
        &[
            ("query.status", "$request.query.status"),
            ("query.userId", "$request.query.userId"),
            ("query.direction", "$request.query.direction"),
            ("query.cursor", "$response.body#/nextCursor"),
        ],
        None,
    );
    add_link(document, "list_orders_by_status", "200", "NextPage", next_page);
    let user =
        link("get_user", "The user who placed the order.", &[("path.id", "$response.body#/userId")], None);
    add_link(document, "get_order", "200", "GetUser", user);

    // Each resource to its history, and each history page to the next.
    for (read, history, parameter, id) in [
        ("get_user", "user_history", "path.id", "$response.body#/userId"),
        ("get_order", "order_history", "path.id", "$response.body#/orderId"),
        ("get_stock", "sku_history", "path.sku", "$response.body#/sku"),
    ] {
        let events = link(history, "Its events, a page at a time.", &[(parameter, id)], None);
        add_link(document, read, "200", "GetHistory", events);
        let request = format!("$request.{parameter}");
        let next_page = link(
            history,
            "The next page (forwards), while `nextCursor` is not null.",
            &[(parameter, request.as_str()), ("query.cursor", "$response.body#/nextCursor")],
            None,
        );
        add_link(document, history, "200", "NextPage", next_page);
    }
}
