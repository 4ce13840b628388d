//! The store: one SQLite file (WAL) behind this narrow module. Registration,
//! registry and baselines are written at once (the API answers after they
//! are durable); what devices report is written by [`spawn_writer`] in
//! batches, coalesced per device.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use fleet_protocol::{
    CountyCode, DeviceId, Event, Model, PresenceStatus, ProvinceCode, StationId, Version,
};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::fleet::{Lifecycle, Registration, Status};
use crate::registry::Registry;

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

/// A stored device event.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub received_ms: u64,
    pub kind: String,
    pub event: serde_json::Value,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
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

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn import_registry(&self, reg: &Registry) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for c in reg.counties.values() {
            sqlx::query(
                "INSERT INTO counties (code, province, name_en, name_fa) VALUES (?, ?, ?, ?)
                 ON CONFLICT(code) DO UPDATE SET name_en = excluded.name_en, name_fa = excluded.name_fa",
            )
            .bind(c.code.as_str())
            .bind(c.province.to_string())
            .bind(&c.name_en)
            .bind(&c.name_fa)
            .execute(&mut *tx)
            .await?;
        }
        for s in reg.stations.values() {
            sqlx::query(
                "INSERT INTO stations (id, county, name) VALUES (?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET county = excluded.county, name = excluded.name",
            )
            .bind(s.id.as_str())
            .bind(s.county.as_str())
            .bind(&s.name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Counties of the registry, with their station counts.
    pub async fn counties(
        &self,
        province: Option<ProvinceCode>,
    ) -> Result<Vec<(String, String, String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.code, c.province, c.name_en, c.name_fa, COUNT(s.id) AS stations
             FROM counties c LEFT JOIN stations s ON s.county = c.code
             WHERE (?1 IS NULL OR c.province = ?1)
             GROUP BY c.code ORDER BY c.code",
        )
        .bind(province.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect())
    }

    pub async fn county_exists(&self, code: &CountyCode) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM counties WHERE code = ?")
            .bind(code.as_str())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// The county a station belongs to, if the station exists.
    pub async fn station_county(&self, id: &StationId) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("SELECT county FROM stations WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0)))
    }

    pub async fn upsert_devices(&self, regs: &[Registration]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for r in regs {
            sqlx::query(
                "INSERT INTO devices (id, model, province, county, station, lifecycle, registered_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET model = excluded.model, province = excluded.province,
                   county = excluded.county, station = excluded.station, lifecycle = excluded.lifecycle",
            )
            .bind(r.id.as_str())
            .bind(r.model.as_str())
            .bind(r.province.to_string())
            .bind(r.county.as_ref().map(|c| c.as_str().to_owned()))
            .bind(r.station.as_ref().map(|s| s.as_str().to_owned()))
            .bind(r.lifecycle.as_str())
            .bind(to_i64(r.registered_at_ms))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_baseline(
        &self,
        model: &Model,
        version: &Version,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO baselines (model, version, set_at_ms) VALUES (?, ?, ?)
             ON CONFLICT(model) DO UPDATE SET version = excluded.version, set_at_ms = excluded.set_at_ms",
        )
        .bind(model.as_str())
        .bind(version.as_str())
        .bind(to_i64(at_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn baselines(&self) -> Result<Vec<(Model, Version)>, StoreError> {
        let rows = sqlx::query("SELECT model, version FROM baselines ORDER BY model")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let m: String = r.get(0);
                let v: String = r.get(1);
                Ok((
                    Model::parse(&m).map_err(|e| corrupt("baselines", e))?,
                    Version::parse(&v).map_err(|e| corrupt("baselines", e))?,
                ))
            })
            .collect()
    }

    /// Every device with its last status, for the in-memory fleet at start.
    pub async fn load_devices(&self) -> Result<Vec<(Registration, Status)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.model, d.province, d.county, d.station, d.lifecycle, d.registered_at,
                    s.last_seen_ms, s.presence, s.state_json, s.health_json, s.health_at_ms, s.session, s.state_sent_at_ms
             FROM devices d LEFT JOIN device_status s ON s.id = d.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let c = |e: fleet_protocol::IdError| corrupt("devices", format!("{id}: {e}"));
            let county: Option<String> = r.get(3);
            let station: Option<String> = r.get(4);
            let lifecycle: String = r.get(5);
            let reg = Registration {
                id: DeviceId::parse(&id).map_err(c)?,
                model: Model::parse(r.get(1)).map_err(c)?,
                province: ProvinceCode::parse(r.get(2)).map_err(c)?,
                county: county
                    .as_deref()
                    .map(CountyCode::parse)
                    .transpose()
                    .map_err(c)?,
                station: station
                    .as_deref()
                    .map(StationId::parse)
                    .transpose()
                    .map_err(c)?,
                lifecycle: Lifecycle::parse(&lifecycle)
                    .ok_or_else(|| corrupt("devices", format!("{id}: lifecycle {lifecycle}")))?,
                registered_at_ms: to_u64(r.get(6)),
            };
            let presence: Option<String> = r.get(8);
            let state: Option<String> = r.get(9);
            let health: Option<String> = r.get(10);
            let json_err = |e: serde_json::Error| corrupt("device_status", format!("{id}: {e}"));
            let status = Status {
                last_seen_ms: r.get::<Option<i64>, _>(7).map(to_u64),
                presence: match presence.as_deref() {
                    Some("online") => Some(PresenceStatus::Online),
                    Some("offline") => Some(PresenceStatus::Offline),
                    _ => None,
                },
                state: state
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(json_err)?,
                health: health
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(json_err)?,
                health_at_ms: r.get::<Option<i64>, _>(11).map(to_u64),
                session: r.get::<Option<i64>, _>(12).map(to_u64),
                state_sent_at_ms: r.get::<Option<i64>, _>(13).map(to_u64),
            };
            out.push((reg, status));
        }
        Ok(out)
    }

    pub async fn recent_events(
        &self,
        device: &DeviceId,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, received_ms, kind, body_json FROM events
             WHERE device = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(device.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let body: String = r.get(4);
                Ok(StoredEvent {
                    seq: to_u64(r.get(0)),
                    at_ms: to_u64(r.get(1)),
                    received_ms: to_u64(r.get(2)),
                    kind: r.get(3),
                    event: serde_json::from_str(&body).map_err(|e| corrupt("events", e))?,
                })
            })
            .collect()
    }

    /// One transaction for a whole batch of reported data.
    pub async fn write_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for (id, s) in &batch.statuses {
            sqlx::query(
                "INSERT INTO device_status (id, last_seen_ms, presence, state_json, health_json, health_at_ms, session, state_sent_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                   presence = excluded.presence, state_json = excluded.state_json,
                   health_json = excluded.health_json, health_at_ms = excluded.health_at_ms,
                   session = excluded.session, state_sent_at_ms = excluded.state_sent_at_ms",
            )
            .bind(id.as_str())
            .bind(s.last_seen_ms.map(to_i64))
            .bind(s.presence.map(|p| match p {
                PresenceStatus::Online => "online",
                PresenceStatus::Offline => "offline",
            }))
            .bind(s.state.as_ref().map(|v| serde_json::to_string(v).expect("state serializes")))
            .bind(s.health.as_ref().map(|v| serde_json::to_string(v).expect("health serializes")))
            .bind(s.health_at_ms.map(to_i64))
            .bind(s.session.map(to_i64))
            .bind(s.state_sent_at_ms.map(to_i64))
            .execute(&mut *tx)
            .await?;
        }
        for (id, e, received_ms) in &batch.events {
            let body = serde_json::to_value(&e.kind).expect("event serializes");
            let kind = match &body {
                serde_json::Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
                serde_json::Value::String(s) => s.clone(),
                _ => String::new(),
            };
            sqlx::query(
                "INSERT INTO events (device, seq, at_ms, received_ms, kind, body_json)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device, seq) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(to_i64(e.seq))
            .bind(to_i64(e.at_ms))
            .bind(to_i64(*received_ms))
            .bind(kind)
            .bind(body.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What the ingest hands to the writer.
#[derive(Debug)]
pub enum WriteOp {
    Status(DeviceId, Box<Status>),
    Event(DeviceId, Event, u64),
}

/// A batch, statuses coalesced per device (only the newest is written).
#[derive(Debug, Default)]
pub struct Batch {
    pub statuses: HashMap<DeviceId, Status>,
    pub events: Vec<(DeviceId, Event, u64)>,
}

impl Batch {
    pub fn push(&mut self, op: WriteOp) {
        match op {
            WriteOp::Status(id, s) => {
                self.statuses.insert(id, *s);
            }
            WriteOp::Event(id, e, at) => self.events.push((id, e, at)),
        }
    }

    pub fn len(&self) -> usize {
        self.statuses.len() + self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Batching knobs of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub max_delay: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 5_000,
            max_delay: Duration::from_millis(200),
        }
    }
}

/// Collect ops into batches (up to `max_batch` or `max_delay` after the
/// first) and write each in one transaction. Ends, after writing what it
/// has, when every sender is gone.
pub fn spawn_writer(
    store: Store,
    mut rx: mpsc::Receiver<WriteOp>,
    cfg: WriterConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = Batch::default();
            batch.push(first);
            let deadline = tokio::time::Instant::now() + cfg.max_delay;
            while batch.len() < cfg.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(op)) => batch.push(op),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut attempt = 0;
            loop {
                match store.write_batch(&batch).await {
                    Ok(()) => {
                        metrics::counter!("fleet_store_batches_total").increment(1);
                        break;
                    }
                    Err(e) if attempt < 3 => {
                        attempt += 1;
                        warn!(error = %e, attempt, "store write failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                    }
                    Err(e) => {
                        metrics::counter!("fleet_store_errors_total").increment(1);
                        error!(error = %e, statuses = batch.statuses.len(), events = batch.events.len(),
                            "store write failed; the in-memory fleet keeps the latest status and the next report is written again");
                        break;
                    }
                }
            }
        }
    })
}

impl FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Lifecycle::parse(s).ok_or_else(|| format!("unknown lifecycle state {s:?}"))
    }
}

/// A stored operator token (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub provinces: Vec<String>,
    #[serde(skip)]
    pub hash: String,
    pub created_at_ms: u64,
    pub created_by: String,
    pub revoked_at_ms: Option<u64>,
}

/// Filters for reading the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub limit: u32,
}

fn audit_row(r: &sqlx::sqlite::SqliteRow) -> crate::audit::Entry {
    crate::audit::Entry {
        seq: to_u64(r.get(0)),
        at_ms: to_u64(r.get(1)),
        actor: r.get(2),
        role: r.get(3),
        action: r.get(4),
        target: r.get(5),
        source: r.get(6),
        detail: r.get(7),
        prev_hash: r.get(8),
        hash: r.get(9),
    }
}

const AUDIT_COLUMNS: &str =
    "seq, at_ms, actor, role, action, target, source, detail, prev_hash, hash";

impl Store {
    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, name, role, provinces, hash, created_at_ms, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(t.provinces.join(","))
        .bind(&t.hash)
        .bind(to_i64(t.created_at_ms))
        .bind(&t.created_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, provinces, hash, created_at_ms, created_by, revoked_at_ms
             FROM tokens ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let provinces: String = r.get(3);
                TokenRow {
                    id: r.get(0),
                    name: r.get(1),
                    role: r.get(2),
                    provinces: provinces
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    hash: r.get(4),
                    created_at_ms: to_u64(r.get(5)),
                    created_by: r.get(6),
                    revoked_at_ms: r.get::<Option<i64>, _>(7).map(to_u64),
                }
            })
            .collect())
    }

    /// Revoke a token; false if there is no such (unrevoked) token.
    pub async fn revoke_token(&self, id: &str, at_ms: u64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
        )
        .bind(to_i64(at_ms))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Append one entry to the audit chain (the caller serializes appends).
    pub async fn append_audit(
        &self,
        entry: crate::audit::Entry,
    ) -> Result<crate::audit::Entry, StoreError> {
        let mut tx = self.write_tx().await?;
        let last = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| audit_row(&r));
        let e = crate::audit::seal(entry, last.as_ref());
        sqlx::query(&format!(
            "INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(to_i64(e.seq))
        .bind(to_i64(e.at_ms))
        .bind(&e.actor)
        .bind(&e.role)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.source)
        .bind(&e.detail)
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn audit_entries(
        &self,
        f: &AuditFilter,
    ) -> Result<Vec<crate::audit::Entry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit
             WHERE (?1 IS NULL OR actor LIKE '%' || ?1 || '%')
               AND (?2 IS NULL OR target = ?2)
               AND (?3 IS NULL OR at_ms >= ?3)
               AND (?4 IS NULL OR at_ms <= ?4)
             ORDER BY seq DESC LIMIT ?5"
        ))
        .bind(f.actor.as_deref())
        .bind(f.target.as_deref())
        .bind(f.since_ms.map(to_i64))
        .bind(f.until_ms.map(to_i64))
        .bind(i64::from(f.limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(audit_row).collect())
    }

    /// One audit entry by sequence number.
    pub async fn audit_entry(&self, seq: u64) -> Result<Option<crate::audit::Entry>, StoreError> {
        Ok(
            sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq = ?"))
                .bind(to_i64(seq))
                .fetch_optional(&self.pool)
                .await?
                .map(|r| audit_row(&r)),
        )
    }

    /// The whole log in order, for verification.
    pub async fn audit_chain(&self) -> Result<Vec<crate::audit::Entry>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(audit_row).collect())
    }
}

impl Store {
    /// Store a shipment's enrolment tokens (hashes only).
    pub async fn insert_enrol_tokens(
        &self,
        shipment: &str,
        tokens: &[(DeviceId, String)],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for (device, hash) in tokens {
            sqlx::query(
                "INSERT INTO enrol_tokens (hash, device, shipment, created_at_ms, expires_at_ms)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(hash)
            .bind(device.as_str())
            .bind(shipment)
            .bind(to_i64(now_ms))
            .bind(to_i64(expires_at_ms))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn enrol_token(
        &self,
        hash: &str,
    ) -> Result<Option<crate::enrol::TokenState>, StoreError> {
        Ok(
            sqlx::query(
                "SELECT device, expires_at_ms, used_at_ms FROM enrol_tokens WHERE hash = ?",
            )
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| crate::enrol::TokenState {
                device: r.get(0),
                expires_at_ms: to_u64(r.get(1)),
                used_at_ms: r.get::<Option<i64>, _>(2).map(to_u64),
            }),
        )
    }

    /// Use a token and record the certificate, in one transaction. False
    /// (and nothing written) if the token was used meanwhile.
    pub async fn complete_enrolment(
        &self,
        hash: &str,
        device: &DeviceId,
        serial: &str,
        now_ms: u64,
        not_after_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let awaiting =
            sqlx::query("SELECT 1 FROM devices WHERE id = ? AND lifecycle = 'registered'")
                .bind(device.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !awaiting {
            return Ok(false);
        }
        let used = sqlx::query(
            "UPDATE enrol_tokens SET used_at_ms = ? WHERE hash = ? AND used_at_ms IS NULL",
        )
        .bind(to_i64(now_ms))
        .bind(hash)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO certificates (serial, device, issued_at_ms, not_after_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(serial)
        .bind(device.as_str())
        .bind(to_i64(now_ms))
        .bind(to_i64(not_after_ms))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE devices SET lifecycle = 'enrolled' WHERE id = ? AND lifecycle = 'registered'",
        )
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The devices of a shipment with their token's state.
    pub async fn shipment(
        &self,
        shipment: &str,
    ) -> Result<Vec<(String, u64, Option<u64>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, expires_at_ms, used_at_ms FROM enrol_tokens WHERE shipment = ? ORDER BY device",
        )
        .bind(shipment)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    to_u64(r.get(1)),
                    r.get::<Option<i64>, _>(2).map(to_u64),
                )
            })
            .collect())
    }
}

impl Store {
    /// Move a device from `from` to `to`; false if it was not at `from`.
    pub async fn set_lifecycle(
        &self,
        device: &DeviceId,
        from: Lifecycle,
        to: Lifecycle,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE devices SET lifecycle = ? WHERE id = ? AND lifecycle = ?")
            .bind(to.as_str())
            .bind(device.as_str())
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Retire a device and revoke its certificates in one transaction;
    /// returns every revoked certificate (serial, revoked at) for the CRL.
    pub async fn retire(
        &self,
        device: &DeviceId,
        now_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE devices SET lifecycle = 'retired' WHERE id = ?")
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
        // Unused enrolment tokens die with the device.
        sqlx::query(
            "UPDATE enrol_tokens SET used_at_ms = ? WHERE device = ? AND used_at_ms IS NULL",
        )
        .bind(to_i64(now_ms))
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE certificates SET revoked_at_ms = ? WHERE device = ? AND revoked_at_ms IS NULL",
        )
        .bind(to_i64(now_ms))
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT serial, revoked_at_ms FROM certificates WHERE revoked_at_ms IS NOT NULL ORDER BY serial",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), to_u64(r.get(1))))
            .collect())
    }
}
