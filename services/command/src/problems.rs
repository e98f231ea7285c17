//! The problem types the command API answers with: the shared ones, its own, and one per broken
//! business rule (`state::rules::Rejection`). docs/problems.md lists the same
//! (tests/api_reference.rs checks).

use axum::http::StatusCode;
use eventline_runtime::problem::{ProblemType, types};

const fn problem(status: StatusCode, slug: &'static str, title: &'static str) -> ProblemType {
    ProblemType::new(status, slug, title)
}

pub const UNAUTHORIZED: ProblemType = problem(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized");
pub const RATE_LIMITED: ProblemType =
    problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests");
pub const INVALID_IDEMPOTENCY_KEY: ProblemType =
    problem(StatusCode::BAD_REQUEST, "invalid-idempotency-key", "Invalid Idempotency-Key");
pub const IDEMPOTENCY_KEY_REUSED: ProblemType =
    problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused");
pub const IDEMPOTENCY_IN_PROGRESS: ProblemType =
    problem(StatusCode::CONFLICT, "idempotency-in-progress", "Request in progress");
pub const IDEMPOTENCY_UNAVAILABLE: ProblemType =
    problem(StatusCode::SERVICE_UNAVAILABLE, "idempotency-unavailable", "Idempotency keys unavailable");
pub const INVALID_IF_MATCH: ProblemType =
    problem(StatusCode::BAD_REQUEST, "invalid-if-match", "Invalid If-Match");
pub const LOG_UNAVAILABLE: ProblemType =
    problem(StatusCode::SERVICE_UNAVAILABLE, "log-unavailable", "Event log unavailable");
pub const DECISION_STATE_UNAVAILABLE: ProblemType =
    problem(StatusCode::SERVICE_UNAVAILABLE, "decision-state-unavailable", "Decision state unavailable");
pub const DECISION_STATE_REBUILDING: ProblemType =
    problem(StatusCode::SERVICE_UNAVAILABLE, "decision-state-rebuilding", "Decision state rebuilding");
/// A batch some of whose commands break a rule. Its status is the one its failures share, or 409.
pub const BATCH_REJECTED: ProblemType = problem(StatusCode::CONFLICT, "batch-rejected", "Batch rejected");

// Broken business rules.
pub const USER_EXISTS: ProblemType = problem(StatusCode::CONFLICT, "user-exists", "User exists");
pub const EMAIL_TAKEN: ProblemType = problem(StatusCode::CONFLICT, "email-taken", "Email taken");
pub const ORDER_EXISTS: ProblemType = problem(StatusCode::CONFLICT, "order-exists", "Order exists");
// A rule on what the command refers to is a conflict with the log's state (409), like the rules
// above: the same request could be accepted against another state. 422 is kept for requests that
// no state could accept.
pub const UNKNOWN_USER: ProblemType = problem(StatusCode::CONFLICT, "unknown-user", "Unknown user");
pub const ORDER_NOT_FOUND: ProblemType = problem(StatusCode::NOT_FOUND, "order-not-found", "Order not found");
pub const ORDER_ALREADY_PAID: ProblemType =
    problem(StatusCode::CONFLICT, "order-already-paid", "Order already paid");
pub const PAYMENT_EXISTS: ProblemType = problem(StatusCode::CONFLICT, "payment-exists", "Payment exists");
pub const PAYMENT_CURRENCY_MISMATCH: ProblemType =
    problem(StatusCode::CONFLICT, "payment-currency-mismatch", "Payment currency differs from the order's");
pub const PAYMENT_AMOUNT_MISMATCH: ProblemType =
    problem(StatusCode::CONFLICT, "payment-amount-mismatch", "Payment amount differs from the order's total");
pub const INSUFFICIENT_STOCK: ProblemType =
    problem(StatusCode::CONFLICT, "insufficient-stock", "Insufficient stock");
pub const STOCK_LIMIT: ProblemType = problem(StatusCode::CONFLICT, "stock-limit", "Stock limit reached");
pub const VERSION_MISMATCH: ProblemType =
    problem(StatusCode::PRECONDITION_FAILED, "version-mismatch", "Version mismatch");

/// Every problem type of the command API.
pub fn all() -> impl Iterator<Item = ProblemType> {
    let own = [
        UNAUTHORIZED,
        RATE_LIMITED,
        INVALID_IDEMPOTENCY_KEY,
        IDEMPOTENCY_KEY_REUSED,
        IDEMPOTENCY_IN_PROGRESS,
        IDEMPOTENCY_UNAVAILABLE,
        INVALID_IF_MATCH,
        LOG_UNAVAILABLE,
        DECISION_STATE_UNAVAILABLE,
        DECISION_STATE_REBUILDING,
        BATCH_REJECTED,
        USER_EXISTS,
        EMAIL_TAKEN,
        ORDER_EXISTS,
        UNKNOWN_USER,
        ORDER_NOT_FOUND,
        ORDER_ALREADY_PAID,
        PAYMENT_EXISTS,
        PAYMENT_CURRENCY_MISMATCH,
        PAYMENT_AMOUNT_MISMATCH,
        INSUFFICIENT_STOCK,
        STOCK_LIMIT,
        VERSION_MISMATCH,
    ];
    types::ALL.iter().copied().chain(own)
}
