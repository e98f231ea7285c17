//! Rows for PostgreSQL's `COPY ... FROM STDIN` in its binary format, sent with sqlx's
//! `copy_in_raw`.
//!
//! sqlx moves the bytes but frames no rows. The framing is small (a header, each row's field
//! count, each field's length, a trailer) and is written here; every value is encoded by sqlx's
//! own `Encode` for PostgreSQL's binary wire format, as a bound parameter would be. The binary
//! format spares PostgreSQL parsing text (UUIDs, times, numbers) and the load escaping it. A value
//! PostgreSQL cannot hold (a NUL character) makes the COPY fail as an insert would, and the caller
//! falls back to the batch path, which parks its key.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound as _, Utc};
use sqlx::postgres::{PgArgumentBuffer, Postgres};
use sqlx::{Connection as _, Encode, PgConnection};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::refused::Refused;

/// The binary format's signature, flags (none) and header extension length (none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Rows being encoded for one table, in one COPY's binary data (header included).
#[derive(Debug)]
pub struct CopyRows {
    bytes: PgArgumentBuffer,
    rows: usize,
    /// Where the current row's field count goes, and the fields written to it so far.
    row_at: Option<(usize, i16)>,
    /// The first value sqlx could not encode: the COPY is refused rather than sent without it.
    unencodable: Option<String>,
}

impl Default for CopyRows {
    fn default() -> CopyRows {
        CopyRows::new()
    }
}

impl CopyRows {
    pub fn new() -> CopyRows {
        CopyRows::with_capacity(0)
    }

    fn with_capacity(capacity: usize) -> CopyRows {
        let mut bytes = PgArgumentBuffer::default();
        bytes.reserve(capacity.max(HEADER.len()));
        bytes.extend_from_slice(HEADER);
        CopyRows { bytes, rows: 0, row_at: None, unencodable: None }
    }

    /// Rows ended so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The encoded rows, leaving this empty (with room for as many: chunks are alike, and
    /// growing a buffer again copies it and touches fresh memory).
    pub fn take(&mut self) -> CopyRows {
        let capacity = if self.is_empty() { 0 } else { self.bytes.len() };
        std::mem::replace(self, CopyRows::with_capacity(capacity))
    }

    /// Starts a field: the row's field count first if it is the row's first.
    fn field(&mut self) -> usize {
        let (_, fields) = self.row_at.get_or_insert_with(|| {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(&0_i16.to_be_bytes());
            (at, 0)
        });
        *fields += 1;
        let length_at = self.bytes.len();
        self.bytes.extend_from_slice(&0_i32.to_be_bytes());
        length_at
    }

    /// Writes the length of the field begun at `length_at` (-1 for null).
    fn close(&mut self, length_at: usize, length: i32) {
        self.bytes[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }

    /// A value, as sqlx binds it: the column must be of the type sqlx maps it to (`Uuid` uuid,
    /// `i32` integer, `i64` bigint, `Decimal` numeric, `&str` text).
    pub fn value<'q, T: Encode<'q, Postgres>>(&mut self, value: &T) -> &mut Self {
        let length_at = self.field();
        let start = self.bytes.len();
        match value.encode_by_ref(&mut self.bytes) {
            Ok(sqlx::encode::IsNull::No) => {
                let length = i32::try_from(self.bytes.len() - start).unwrap_or(i32::MAX);
                self.close(length_at, length);
            }
            Ok(sqlx::encode::IsNull::Yes) => {
                self.bytes.truncate(start);
                self.close(length_at, -1);
            }
            // None of the types used here fails to encode; one that did makes `send` refuse the
            // rows (the load gives way), never writes a null in the value's place.
            Err(error) => {
                self.bytes.truncate(start);
                self.close(length_at, -1);
                self.unencodable.get_or_insert_with(|| error.to_string());
            }
        }
        self
    }

    /// A text field.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.value(&value)
    }

    /// A jsonb field, from its JSON text (the binary form is a version byte, then the text).
    pub fn jsonb(&mut self, json: &str) -> &mut Self {
        let length_at = self.field();
        self.bytes.push(1);
        self.bytes.extend_from_slice(json.as_bytes());
        self.close(length_at, i32::try_from(json.len() + 1).unwrap_or(i32::MAX));
        self
    }

    /// A timestamp, to the microsecond PostgreSQL keeps (cut, as sqlx cuts when it binds one).
    pub fn time(&mut self, at: DateTime<Utc>) -> &mut Self {
        self.value(&at)
    }

    pub fn null(&mut self) -> &mut Self {
        let length_at = self.field();
        self.close(length_at, -1);
        self
    }

    /// Ends the current row.
    pub fn end(&mut self) {
        if let Some((at, fields)) = self.row_at.take() {
            self.bytes[at..at + 2].copy_from_slice(&fields.to_be_bytes());
        }
        self.rows += 1;
    }

    /// Sends the rows to `table` (schema-qualified) `columns`, in one COPY. `FREEZE`: the rows
    /// are written frozen and the pages marked all-visible, so no vacuum has to visit them after
    /// the load (the table was emptied in the same transaction, which FREEZE requires).
    pub async fn send(
        mut self,
        conn: &mut sqlx::PgConnection,
        table: &str,
        columns: &str,
    ) -> sqlx::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if let Some(error) = self.unencodable.take() {
            return Err(sqlx::Error::Encode(
                format!("a value for {table} could not be encoded: {error}").into(),
            ));
        }
        self.bytes.extend_from_slice(&(-1_i16).to_be_bytes());
        let statement = format!("COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary, FREEZE)");
        let mut copy = conn.copy_in_raw(&statement).await?;
        copy.send(&self.bytes[..]).await?;
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

/// Rows per COPY statement.
pub const CHUNK_ROWS: usize = 50_000;

/// Times as PostgreSQL keeps them (and sqlx sends them): cut to the microsecond.
pub fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Rows of one table sent in COPYs of [`CHUNK_ROWS`], so the encoded rows stay small.
pub struct Chunked<'s> {
    sink: &'s Writers,
    table: String,
    columns: &'static str,
    rows: CopyRows,
}

impl<'s> Chunked<'s> {
    pub fn new(sink: &'s Writers, table: String, columns: &'static str) -> Chunked<'s> {
        Chunked { sink, table, columns, rows: CopyRows::new() }
    }

    /// The row being written.
    pub fn row(&mut self) -> &mut CopyRows {
        &mut self.rows
    }

    /// Ends the row; sends the chunk when it is full.
    pub async fn end(&mut self) -> Result<(), Refused> {
        self.rows.end();
        if self.rows.rows() >= CHUNK_ROWS {
            self.sink.send(self.table.clone(), self.columns, self.rows.take()).await?;
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(), Refused> {
        self.sink.send(self.table, self.columns, self.rows.take()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_framed_with_field_counts_lengths_and_nulls() {
        let mut rows = CopyRows::new();
        rows.text("a\tb").value(&42_i32).null();
        rows.end();
        rows.jsonb("{}");
        rows.end();
        assert_eq!(rows.rows(), 2);
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&3_i16.to_be_bytes());
        expected.extend_from_slice(&3_i32.to_be_bytes());
        expected.extend_from_slice(b"a\tb");
        expected.extend_from_slice(&4_i32.to_be_bytes());
        expected.extend_from_slice(&42_i32.to_be_bytes());
        expected.extend_from_slice(&(-1_i32).to_be_bytes());
        expected.extend_from_slice(&1_i16.to_be_bytes());
        expected.extend_from_slice(&3_i32.to_be_bytes());
        expected.extend_from_slice(b"\x01{}");
        assert_eq!(&rows.bytes[..], &expected[..]);
    }

    #[test]
    fn a_chunk_taken_leaves_an_empty_one_with_its_header() {
        let mut rows = CopyRows::new();
        rows.value(&1_i64);
        rows.end();
        let taken = rows.take();
        assert_eq!(taken.rows(), 1);
        assert!(rows.is_empty());
        assert_eq!(&rows.bytes[..], HEADER);
    }

    #[test]
    fn a_value_that_cannot_be_encoded_is_remembered_not_written_as_null() {
        struct Broken;
        impl Encode<'_, Postgres> for Broken {
            fn encode_by_ref(
                &self,
                _: &mut PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                Err("broken".into())
            }
        }
        let mut rows = CopyRows::new();
        rows.value(&Broken).value(&1_i32);
        rows.end();
        assert_eq!(rows.unencodable.as_deref(), Some("broken"), "send refuses these rows");
        assert_eq!(rows.rows(), 1, "the row stays framed");
    }
}
