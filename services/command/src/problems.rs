//! The problem types the command API answers with: the shared ones, its own, and one per broken
//! business rule (`state::rules::Rejection`). docs/problems.md lists the same
//! (tests/api_reference.rs checks).

use eventline_runtime::problem::{ProblemMember, ProblemType, types};

eventline_runtime::problem_types! {
    INVALID_IDEMPOTENCY_KEY = (BAD_REQUEST, "invalid-idempotency-key", "Invalid Idempotency-Key");
    IDEMPOTENCY_KEY_REUSED = (UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused");
    IDEMPOTENCY_IN_PROGRESS = (CONFLICT, "idempotency-in-progress", "Request in progress");
    IDEMPOTENCY_UNAVAILABLE = (SERVICE_UNAVAILABLE, "idempotency-unavailable", "Idempotency keys unavailable");
    INVALID_IF_MATCH = (BAD_REQUEST, "invalid-if-match", "Invalid If-Match");
    LOG_UNAVAILABLE = (SERVICE_UNAVAILABLE, "log-unavailable", "Event log unavailable");
    DECISION_STATE_UNAVAILABLE = (SERVICE_UNAVAILABLE, "decision-state-unavailable", "Decision state unavailable");
    DECISION_STATE_REBUILDING = (SERVICE_UNAVAILABLE, "decision-state-rebuilding", "Decision state rebuilding");
    /// A batch some of whose commands break a rule. Its status is the one its failures share, or 409.
    BATCH_REJECTED = (CONFLICT, "batch-rejected", "Batch rejected");

    // Broken business rules.
    USER_EXISTS = (CONFLICT, "user-exists", "User exists");
    EMAIL_TAKEN = (CONFLICT, "email-taken", "Email taken");
    ORDER_EXISTS = (CONFLICT, "order-exists", "Order exists");
    // A rule on what the command refers to is a conflict with the log's state (409), like the rules
    // above: the same request could be accepted against another state. 422 is kept for requests that
    // no state could accept.
    UNKNOWN_USER = (CONFLICT, "unknown-user", "Unknown user");
    ORDER_NOT_FOUND = (NOT_FOUND, "order-not-found", "Order not found");
    ORDER_ALREADY_PAID = (CONFLICT, "order-already-paid", "Order already paid");
    PAYMENT_EXISTS = (CONFLICT, "payment-exists", "Payment exists");
    PAYMENT_CURRENCY_MISMATCH = (CONFLICT, "payment-currency-mismatch", "Payment currency differs from the order's");
    PAYMENT_AMOUNT_MISMATCH = (CONFLICT, "payment-amount-mismatch", "Payment amount differs from the order's total");
    INSUFFICIENT_STOCK = (CONFLICT, "insufficient-stock", "Insufficient stock");
    STOCK_LIMIT = (CONFLICT, "stock-limit", "Stock limit reached");
    VERSION_MISMATCH = (PRECONDITION_FAILED, "version-mismatch", "Version mismatch");
}

/// Units of the sku in stock, on `insufficient-stock`.
pub const AVAILABLE: ProblemMember =
    ProblemMember { name: "available", description: "Units of the sku in stock, on `insufficient-stock`." };
/// The aggregate's version now, on `version-mismatch`.
pub const CURRENT_VERSION: ProblemMember = ProblemMember {
    name: "currentVersion",
    description: "The aggregate's version now, on `version-mismatch`: read it again and decide anew.",
};

/// Every problem type of the command API: the shared ones, then its own.
pub fn all() -> impl Iterator<Item = ProblemType> {
    types::ALL.iter().chain(eventline_runtime::auth::ALL).chain(ALL).copied()
}
