//! The problem types the query API answers with: the shared ones and its own. docs/problems.md
//! lists the same (tests/api_reference.rs checks).

use axum::http::StatusCode;
use eventline_runtime::problem::{ProblemType, types};

pub const INVALID_ID: ProblemType = ProblemType::new(StatusCode::BAD_REQUEST, "invalid-id", "Invalid id");
pub const INVALID_CURSOR: ProblemType =
    ProblemType::new(StatusCode::BAD_REQUEST, "invalid-cursor", "Invalid cursor");
pub const INVALID_CONSISTENCY_TOKEN: ProblemType =
    ProblemType::new(StatusCode::BAD_REQUEST, "invalid-consistency-token", "Invalid Consistency-Token");
/// A token this log cannot have issued (yet): a conflict with the log's state, like the command
/// API's rules, since the same token could be reached by another log or a longer one.
pub const IMPOSSIBLE_CONSISTENCY_TOKEN: ProblemType =
    ProblemType::new(StatusCode::CONFLICT, "impossible-consistency-token", "Impossible Consistency-Token");
pub const PROJECTION_BEHIND: ProblemType =
    ProblemType::new(StatusCode::SERVICE_UNAVAILABLE, "projection-behind", "Projection behind");
pub const READ_MODELS_FROM_ANOTHER_LOG: ProblemType = ProblemType::new(
    StatusCode::SERVICE_UNAVAILABLE,
    "read-models-from-another-log",
    "Read models from another log",
);

/// Every problem type of the query API.
pub fn all() -> impl Iterator<Item = ProblemType> {
    let own = [
        INVALID_ID,
        INVALID_CURSOR,
        INVALID_CONSISTENCY_TOKEN,
        IMPOSSIBLE_CONSISTENCY_TOKEN,
        PROJECTION_BEHIND,
        READ_MODELS_FROM_ANOTHER_LOG,
    ];
    types::ALL.iter().copied().chain(own)
}
