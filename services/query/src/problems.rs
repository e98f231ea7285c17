//! The problem types the query API answers with: the shared ones and its own. docs/problems.md
//! lists the same (tests/api_reference.rs checks).

use eventline_runtime::problem::{ProblemMember, ProblemType, types};

eventline_runtime::problem_types! {
    INVALID_ID = (BAD_REQUEST, "invalid-id", "Invalid id");
    INVALID_CURSOR = (BAD_REQUEST, "invalid-cursor", "Invalid cursor");
    INVALID_CONSISTENCY_TOKEN = (BAD_REQUEST, "invalid-consistency-token", "Invalid Consistency-Token");
    /// A token this log cannot have issued (yet): a conflict with the log's state, like the command
    /// API's rules, since the same token could be reached by another log or a longer one.
    IMPOSSIBLE_CONSISTENCY_TOKEN = (CONFLICT, "impossible-consistency-token", "Impossible Consistency-Token");
    PROJECTION_BEHIND = (SERVICE_UNAVAILABLE, "projection-behind", "Projection behind");
    /// The route's read model was added by a deploy and has not yet caught up with the log for
    /// the first time: it has nothing it could present as current.
    PROJECTION_CATCHING_UP = (SERVICE_UNAVAILABLE, "projection-catching-up", "Projection catching up");
    READ_TIMEOUT = (SERVICE_UNAVAILABLE, "read-timeout", "Read took too long");
    READ_MODELS_FROM_ANOTHER_LOG = (SERVICE_UNAVAILABLE, "read-models-from-another-log", "Read models from another log");
    /// The aggregate's events are parked behind one the database refused: what the read models
    /// hold of it is behind the log, and is not served as current.
    AGGREGATE_PARKED = (SERVICE_UNAVAILABLE, "aggregate-parked", "Aggregate parked");
}

/// The aggregate's version now, on the `not-found` of a history read beyond it.
pub const CURRENT_VERSION: ProblemMember = ProblemMember {
    name: "currentVersion",
    description: "The aggregate's version now, on the `not-found` of a history read asking for a later one.",
};

/// Every problem type of the query API: the shared ones, then its own.
pub fn all() -> impl Iterator<Item = ProblemType> {
    types::ALL.iter().chain(eventline_runtime::auth::ALL).chain(ALL).copied()
}
