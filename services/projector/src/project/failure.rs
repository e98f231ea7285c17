//! Why applying events failed: the database refusing the data (the event is at fault, and
//! retrying it changes nothing) or the database being unavailable (the moment is at fault, and
//! the same events apply once it is back). docs/operations.md ("Why a batch fails") has the
//! table; this is it in code.

/// What an error says about the events that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The database refused the data: the event (or its effect on a row) is at fault. Its key is
    /// parked; retrying it would fail the same way.
    Data,
    /// The database or the way to it is unavailable, or the schema does not match the code (a
    /// deploy is at fault, not the event): retried with backoff, nothing parked.
    Outage,
    /// Neither: retried a bounded number of times, then treated as data.
    Unknown,
}

/// Classes an error met while applying events.
pub fn classify(error: &sqlx::Error) -> Cause {
    match error {
        sqlx::Error::Database(database) => database.code().map_or(Cause::Unknown, |code| by_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Cause::Outage,
        _ => Cause::Unknown,
    }
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// Classes a SQLSTATE by its class (its first two characters; PostgreSQL's appendix A).
pub fn by_sqlstate(code: &str) -> Cause {
    match code.get(..2) {
        // Data exceptions (a value out of range, a bad encoding), integrity constraints, a
        // trigger's or function's exception (PL/pgSQL `RAISE`, assertions, external routines),
        // a program limit the value breaks (an index row too large), a triggered data change.
        Some("22" | "23" | "P0" | "2F" | "38" | "39" | "09" | "27" | "44" | "54") => Cause::Data,
        // Connection, insufficient resources, operator intervention (shutdown, statement
        // timeout), system errors, serialization failures and deadlocks, locks not available;
        // and class 42 (an undefined table or column, a missing privilege): the schema or the
        // grants do not match the code, which a deploy fixes, never the event.
        Some("08" | "53" | "57" | "58" | "40" | "55" | "42" | "F0" | "HV") => Cause::Outage,
        _ => Cause::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_the_data_are_told_from_outages() {
        for code in ["22003", "23505", "23514", "P0001", "P0004", "54000", "22P02"] {
            assert_eq!(by_sqlstate(code), Cause::Data, "{code}");
        }
        for code in ["08006", "53300", "57P01", "57014", "40001", "40P01", "55P03", "42703", "42501"] {
            assert_eq!(by_sqlstate(code), Cause::Outage, "{code}");
        }
        for code in ["XX000", "25P02", "0A000", ""] {
            assert_eq!(by_sqlstate(code), Cause::Unknown, "{code}");
        }
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Cause::Outage);
        assert_eq!(classify(&sqlx::Error::RowNotFound), Cause::Unknown);
    }
}
