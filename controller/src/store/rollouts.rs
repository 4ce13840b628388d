//! Rollouts, their members and their log. The rollout loop
//! (`crate::rollouts`) is the one writer: it creates a rollout with its
//! members in one transaction, and each tick writes every member and
//! status that changed, with the log lines of that tick, in one
//! transaction.

use fleet_protocol::{DeviceId, ProvinceCode};
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};

/// A rollout's row (its plan and status).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRollout {
    pub id: u64,
    pub name: String,
    /// `firmware` or `agent`.
    pub artifact: String,
    /// The hardware model (firmware) or platform (agent).
    pub model: String,
    pub version: String,
    /// The TUF target name.
    pub manifest: String,
    /// The request as the API received it (JSON).
    pub spec_json: String,
    pub wave_names: Vec<String>,
    pub status: StoredStatus,
    pub created_ms: u64,
    pub created_by: String,
}

/// What changes as a rollout runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStatus {
    /// `draft`, `running`, `paused`, `completed`, `aborted`.
    pub phase: String,
    pub wave: u32,
    pub paused_reason: Option<String>,
    pub held: Option<String>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

/// One device of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub device: DeviceId,
    pub province: ProvinceCode,
    pub wave: u32,
    /// The engine's state name (`pending`, `released`, …, `timed-out`).
    pub state: String,
    pub attempt: u32,
    pub released_ms: Option<u64>,
    pub message: String,
}

/// One line of a rollout's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub rollout: u64,
    pub at_ms: u64,
    pub kind: String,
    pub detail: String,
}

/// What one tick of the loop writes for one rollout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutChanges {
    pub status: Option<(u64, StoredStatus)>,
    pub members: Vec<(u64, StoredMember)>,
    pub log: Vec<LogLine>,
}

impl RolloutChanges {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.members.is_empty() && self.log.is_empty()
    }
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(to_u64)
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

async fn write_status(tx: &mut Tx, id: u64, s: &StoredStatus) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE rollouts SET phase = ?, wave = ?, paused_reason = ?, held = ?,
           started_ms = ?, finished_ms = ? WHERE id = ?",
    )
    .bind(&s.phase)
    .bind(i64::from(s.wave))
    .bind(&s.paused_reason)
    .bind(&s.held)
    .bind(s.started_ms.map(to_i64))
    .bind(s.finished_ms.map(to_i64))
    .bind(to_i64(id))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_member(tx: &mut Tx, id: u64, m: &StoredMember) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rollout_members (rollout, device, province, wave, state, attempt,
           released_ms, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(rollout, device) DO UPDATE SET province = excluded.province,
           wave = excluded.wave, state = excluded.state, attempt = excluded.attempt,
           released_ms = excluded.released_ms, message = excluded.message",
    )
    .bind(to_i64(id))
    .bind(m.device.as_str())
    .bind(m.province.to_string())
    .bind(i64::from(m.wave))
    .bind(&m.state)
    .bind(i64::from(m.attempt))
    .bind(m.released_ms.map(to_i64))
    .bind(&m.message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_log(tx: &mut Tx, l: &LogLine) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO rollout_log (rollout, at_ms, kind, detail) VALUES (?, ?, ?, ?)")
        .bind(to_i64(l.rollout))
        .bind(to_i64(l.at_ms))
        .bind(&l.kind)
        .bind(&l.detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Store a new rollout with its members and its first log lines; its
    /// id is the next free one.
    pub async fn create_rollout(
        &self,
        r: &StoredRollout,
        members: &[StoredMember],
        log: &[(u64, String, String)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let names = serde_json::to_string(&r.wave_names).expect("a list of strings serializes");
        let id: i64 = sqlx::query(
            "INSERT INTO rollouts (name, artifact, model, version, manifest, spec_json,
               wave_names_json, phase, wave, paused_reason, held, created_ms, created_by,
               started_ms, finished_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&r.name)
        .bind(&r.artifact)
        .bind(&r.model)
        .bind(&r.version)
        .bind(&r.manifest)
        .bind(&r.spec_json)
        .bind(names)
        .bind(&r.status.phase)
        .bind(i64::from(r.status.wave))
        .bind(&r.status.paused_reason)
        .bind(&r.status.held)
        .bind(to_i64(r.created_ms))
        .bind(&r.created_by)
        .bind(r.status.started_ms.map(to_i64))
        .bind(r.status.finished_ms.map(to_i64))
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        let id = to_u64(id);
        for m in members {
            write_member(&mut tx, id, m).await?;
        }
        for (at_ms, kind, detail) in log {
            write_log(
                &mut tx,
                &LogLine {
                    rollout: id,
                    at_ms: *at_ms,
                    kind: kind.clone(),
                    detail: detail.clone(),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Write what a tick changed for several rollouts, in one transaction.
    pub async fn persist_rollouts(&self, all: &[RolloutChanges]) -> Result<(), StoreError> {
        if all.iter().all(RolloutChanges::is_empty) {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for c in all {
            if let Some((id, s)) = &c.status {
                write_status(&mut tx, *id, s).await?;
            }
            for (id, m) in &c.members {
                write_member(&mut tx, *id, m).await?;
            }
            for l in &c.log {
                write_log(&mut tx, l).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every rollout, oldest first; `with_aborted` false leaves out aborted ones.
    pub async fn rollouts(&self, with_aborted: bool) -> Result<Vec<StoredRollout>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, artifact, model, version, manifest, spec_json, wave_names_json,
               phase, wave, paused_reason, held, created_ms, created_by, started_ms, finished_ms
             FROM rollouts WHERE ? OR phase <> 'aborted' ORDER BY id",
        )
        .bind(with_aborted)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let names: String = r.get(7);
                Ok(StoredRollout {
                    id: to_u64(r.get(0)),
                    name: r.get(1),
                    artifact: r.get(2),
                    model: r.get(3),
                    version: r.get(4),
                    manifest: r.get(5),
                    spec_json: r.get(6),
                    wave_names: serde_json::from_str(&names).map_err(|e| corrupt("rollouts", e))?,
                    status: StoredStatus {
                        phase: r.get(8),
                        wave: u32::try_from(r.get::<i64, _>(9))
                            .map_err(|e| corrupt("rollouts", e))?,
                        paused_reason: r.get(10),
                        held: r.get(11),
                        started_ms: opt_u64(r.get(14)),
                        finished_ms: opt_u64(r.get(15)),
                    },
                    created_ms: to_u64(r.get(12)),
                    created_by: r.get(13),
                })
            })
            .collect()
    }

    /// A rollout's members, by device.
    pub async fn rollout_members(&self, id: u64) -> Result<Vec<StoredMember>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, province, wave, state, attempt, released_ms, message
             FROM rollout_members WHERE rollout = ? ORDER BY device",
        )
        .bind(to_i64(id))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let device: String = r.get(0);
                let province: String = r.get(1);
                let c = |e: String| corrupt("rollout_members", format!("{device}: {e}"));
                Ok(StoredMember {
                    device: DeviceId::parse(&device).map_err(|e| c(e.to_string()))?,
                    province: province
                        .parse()
                        .map_err(|e: fleet_protocol::IdError| c(e.to_string()))?,
                    wave: u32::try_from(r.get::<i64, _>(2)).map_err(|e| c(e.to_string()))?,
                    state: r.get(3),
                    attempt: u32::try_from(r.get::<i64, _>(4)).map_err(|e| c(e.to_string()))?,
                    released_ms: opt_u64(r.get(5)),
                    message: r.get(6),
                })
            })
            .collect()
    }

    /// The last `limit` lines of a rollout's log, oldest first.
    pub async fn rollout_log(&self, id: u64, limit: u32) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, kind, detail FROM (
               SELECT rowid, at_ms, kind, detail FROM rollout_log WHERE rollout = ?
               ORDER BY rowid DESC LIMIT ?) ORDER BY rowid",
        )
        .bind(to_i64(id))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| LogLine {
                rollout: id,
                at_ms: to_u64(r.get(0)),
                kind: r.get(1),
                detail: r.get(2),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, state: &str) -> StoredMember {
        StoredMember {
            device: DeviceId::parse(id).unwrap(),
            province: "IR-23".parse().unwrap(),
            wave: 0,
            state: state.into(),
            attempt: 0,
            released_ms: None,
            message: String::new(),
        }
    }

    fn rollout(phase: &str) -> StoredRollout {
        StoredRollout {
            id: 0,
            name: "ballot-box-v2 2.5.0".into(),
            artifact: "firmware".into(),
            model: "ballot-box-v2".into(),
            version: "2.5.0".into(),
            manifest: "firmware/ballot-box-v2/2.5.0.tar".into(),
            spec_json: "{}".into(),
            wave_names: vec!["canary".into(), "rest".into()],
            status: StoredStatus {
                phase: phase.into(),
                wave: 0,
                paused_reason: None,
                held: None,
                started_ms: None,
                finished_ms: None,
            },
            created_ms: 1,
            created_by: "tok_1".into(),
        }
    }

    #[tokio::test]
    async fn a_rollout_its_members_and_each_ticks_changes_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        let store = Store::open(&path).await.unwrap();
        let id = store
            .create_rollout(
                &rollout("draft"),
                &[member("BB-1", "pending"), member("BB-2", "skipped")],
                &[(1, "created".into(), "by tok_1".into())],
            )
            .await
            .unwrap();
        let aborted = store
            .create_rollout(&rollout("aborted"), &[], &[])
            .await
            .unwrap();
        assert_ne!(id, aborted);

        let status = StoredStatus {
            phase: "running".into(),
            wave: 1,
            paused_reason: None,
            held: Some("freeze window".into()),
            started_ms: Some(5),
            finished_ms: None,
        };
        let released = StoredMember {
            attempt: 1,
            released_ms: Some(6),
            ..member("BB-1", "released")
        };
        store
            .persist_rollouts(&[RolloutChanges {
                status: Some((id, status.clone())),
                members: vec![(id, released.clone())],
                log: vec![LogLine {
                    rollout: id,
                    at_ms: 5,
                    kind: "started".into(),
                    detail: String::new(),
                }],
            }])
            .await
            .unwrap();
        store.close().await;

        let store = Store::open(&path).await.unwrap();
        let live = store.rollouts(false).await.unwrap();
        assert_eq!(live.len(), 1, "the aborted one is not restored");
        assert_eq!(live[0].id, id);
        assert_eq!(live[0].status, status);
        assert_eq!(live[0].wave_names, ["canary", "rest"]);
        assert_eq!(store.rollouts(true).await.unwrap().len(), 2);
        assert_eq!(
            store.rollout_members(id).await.unwrap(),
            [released, member("BB-2", "skipped")]
        );
        let log = store.rollout_log(id, 50).await.unwrap();
        assert_eq!(
            log.iter().map(|l| l.kind.as_str()).collect::<Vec<_>>(),
            ["created", "started"]
        );
        assert_eq!(store.rollout_log(id, 1).await.unwrap()[0].kind, "started");
    }
}
