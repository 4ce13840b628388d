//! The store: one SQLite file (WAL) behind this narrow module, one file per
//! group of tables. Registration,
//! registry and baselines are written at once (the API answers after they
//! are durable); what devices report is written by [`spawn_writer`] in
//! batches, coalesced per device.

mod audit;
mod baselines;
pub mod bench;
mod commands;
mod console;
mod desired;
mod devices;
mod enrolment;
mod events;
mod registry;
mod rollouts;
mod tokens;
mod updates;
mod writer;

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use audit::AuditFilter;
pub use commands::CommandRow;
pub use console::{Sample, ShipmentLine};
pub use enrolment::ShipmentDevice;
pub use events::{OutboxDrops, StoredEvent, StoredGap};
pub use registry::CountyRow;
pub use rollouts::{LogLine, RolloutChanges, StoredMember, StoredRollout, StoredStatus};
pub use tokens::TokenRow;
pub use writer::{
    spawn_writer, spawn_writer_with_tracks, AfterCommit, Batch, TrackSender, WriteOp, WriterConfig,
    Written,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

impl Store {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// A write transaction that takes the write lock at once (BEGIN
    /// IMMEDIATE), so concurrent writers wait for each other (busy timeout)
    /// instead of failing when a read turns into a write.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Copy the WAL into the database and truncate it (what is on disk is
    /// then the database file alone).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A consistent copy of the whole database in the new file `path`
    /// (`VACUUM INTO`: one read transaction, so writers go on meanwhile).
    pub async fn copy_into(&self, path: &Path) -> Result<(), StoreError> {
        sqlx::query("VACUUM INTO ?")
            .bind(path.display().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
