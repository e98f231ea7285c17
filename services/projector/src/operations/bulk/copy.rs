//! Rows for PostgreSQL's `COPY ... FROM STDIN` in its text format, sent with sqlx's `copy_in_raw`.
//!
//! sqlx moves the bytes but encodes no rows, and no maintained crate encodes the text format for
//! sqlx: the format is small (tab-separated fields, `\N` for null, four characters escaped), so
//! it is written here. A value PostgreSQL cannot hold (a NUL character) makes the COPY fail as
//! an insert would, and the caller falls back to the batch path, which parks its key.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Refused;

/// Rows being encoded for one table.
#[derive(Debug)]
pub struct CopyRows {
    bytes: String,
    rows: usize,
    /// No field written yet in the current row.
    row_start: bool,
}

impl Default for CopyRows {
    fn default() -> CopyRows {
        CopyRows::new()
    }
}

impl CopyRows {
    pub fn new() -> CopyRows {
        CopyRows { bytes: String::new(), rows: 0, row_start: true }
    }

    /// Rows ended so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The encoded rows, leaving this empty.
    pub fn take(&mut self) -> CopyRows {
        std::mem::take(self)
    }

    fn separate(&mut self) {
        if !self.row_start {
            self.bytes.push('\t');
        }
        self.row_start = false;
    }

    /// A text field, escaped.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.separate();
        if !value.bytes().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
            self.bytes.push_str(value);
            return self;
        }
        for c in value.chars() {
            match c {
                '\\' => self.bytes.push_str("\\\\"),
                '\t' => self.bytes.push_str("\\t"),
                '\n' => self.bytes.push_str("\\n"),
                '\r' => self.bytes.push_str("\\r"),
                c => self.bytes.push(c),
            }
        }
        self
    }

    /// A field whose text form never needs escaping: numbers, UUIDs, decimals.
    pub fn plain(&mut self, value: impl Display) -> &mut Self {
        self.separate();
        let _ = write!(self.bytes, "{value}");
        self
    }

    /// A timestamp, to the microsecond PostgreSQL keeps (cut, as sqlx's binary encoding cuts:
    /// PostgreSQL would round the text form). Written field by field: chrono's `format` parses
    /// its pattern on every call, a cost that shows at a million rows.
    pub fn time(&mut self, at: DateTime<Utc>) -> &mut Self {
        use chrono::{Datelike as _, Timelike as _};
        self.separate();
        let micros = at.nanosecond() % 1_000_000_000 / 1_000;
        let _ = write!(
            self.bytes,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}+00",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
        );
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.separate();
        self.bytes.push_str("\\N");
        self
    }

    /// Ends the current row.
    pub fn end(&mut self) {
        self.bytes.push('\n');
        self.rows += 1;
        self.row_start = true;
    }

    /// Sends the rows to `table` (schema-qualified) `columns`, in one COPY.
    pub async fn send(self, conn: &mut sqlx::PgConnection, table: &str, columns: &str) -> sqlx::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut copy = conn.copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN")).await?;
        copy.send(self.bytes.into_bytes()).await?;
        copy.finish().await.map(|_| ())
    }
}

/// What a writer does, in the order given.
enum Job {
    Copy {
        columns: &'static str,
        rows: CopyRows,
    },
    /// The table holds all its rows: build its indexes again and its statistics (for the batch
    /// path's plans once the version is switched to).
    Complete,
    /// The load is complete: commit.
    Commit,
}

/// One table to load: its connection, in the transaction begun on it, and the statements that
/// build its dropped indexes again.
pub struct TableLoad {
    pub table: String,
    pub conn: PgConnection,
    pub indexes: Vec<String>,
}

/// The writers of a load: one task per table, each on a transaction of its own (so PostgreSQL
/// takes several tables at once, and builds one's indexes while it takes another's rows), fed
/// through channels so the fold goes on meanwhile.
pub struct Writers {
    sinks: BTreeMap<String, mpsc::Sender<Job>>,
}

/// The writers' tasks: each commits its transaction when told ([`Writers::commit`]), rolls it back
/// when its channel closes without that (the load gave way), or stops at its first error.
pub type Writing = Vec<JoinHandle<sqlx::Result<()>>>;

impl Writers {
    /// Starts a writer per table of `loads`.
    pub fn start(loads: Vec<TableLoad>) -> (Writers, Writing) {
        let mut sinks = BTreeMap::new();
        let mut writing = Vec::with_capacity(loads.len());
        for load in loads {
            let (sender, jobs) = mpsc::channel::<Job>(4);
            sinks.insert(load.table.clone(), sender);
            writing.push(tokio::spawn(write(load, jobs)));
        }
        (Writers { sinks }, writing)
    }

    /// Hands `rows` for `table` (schema-qualified) `columns` to its writer.
    pub async fn send(&self, table: String, columns: &'static str, rows: CopyRows) -> Result<(), Refused> {
        if rows.is_empty() {
            return Ok(());
        }
        self.job(&table, Job::Copy { columns, rows }).await
    }

    /// Tells `table`'s writer the table holds all its rows (once it has taken those handed
    /// before).
    pub async fn complete(&self, table: &str) -> Result<(), Refused> {
        self.job(table, Job::Complete).await
    }

    /// Tells every writer to commit, once it has done what it was handed.
    pub async fn commit(self) -> Result<(), Refused> {
        for sink in self.sinks.values() {
            sink.send(Job::Commit).await.map_err(|_| Refused::WriterStopped)?;
        }
        Ok(())
    }

    async fn job(&self, table: &str, job: Job) -> Result<(), Refused> {
        let sink = self.sinks.get(table).ok_or_else(|| Refused::NoWriter(table.to_owned()))?;
        sink.send(job).await.map_err(|_| Refused::WriterStopped)
    }
}

/// One table's writer: commits when told; at an error, or when its channel closes first, its
/// connection closes, which rolls its transaction back.
async fn write(load: TableLoad, mut jobs: mpsc::Receiver<Job>) -> sqlx::Result<()> {
    let TableLoad { table, mut conn, indexes } = load;
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Copy { columns, rows } => rows.send(&mut conn, &table, columns).await?,
            Job::Complete => {
                for create in &indexes {
                    sqlx::query(create).execute(&mut conn).await?;
                }
                sqlx::query(&format!("ANALYZE {table}")).execute(&mut conn).await?;
            }
            Job::Commit => {
                sqlx::query("COMMIT").execute(&mut conn).await?;
                break;
            }
        }
    }
    conn.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_tab_separated_escaped_and_null_is_marked() {
        let mut rows = CopyRows::new();
        rows.text("a\tb\\c\nd").plain(42).null();
        rows.end();
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z").map(|t| t.to_utc());
        rows.time(at.unwrap_or_default());
        rows.end();
        assert_eq!(rows.rows(), 2);
        assert_eq!(rows.bytes, "a\\tb\\\\c\\nd\t42\t\\N\n2026-01-02 03:04:05.123456+00\n");
    }
}
