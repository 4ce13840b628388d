//! Remote commands (`domain::commands`): stored before they are published,
//! settled by the device's `command-result` event (in the batched writer's
//! transaction), marked `expired` by the sweeper, and for upload-logs the
//! one-use token's SHA-256, spent when the logs arrive.

use fleet_protocol::{Action, DeviceId};
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};
use crate::domain::commands::{self, CommandState, HeldUpload};

/// A command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    pub id: String,
    pub device: DeviceId,
    pub action: Action,
    pub issued_ms: u64,
    pub expires_ms: u64,
    pub issued_by: String,
    pub state: CommandState,
    pub result_ms: Option<u64>,
    pub message: String,
    /// SHA-256 (hex) of the upload token, until it is used.
    pub upload_token_sha256: Option<String>,
    /// Bytes of logs taken for it.
    pub upload_bytes: Option<u64>,
}

const COLUMNS: &str = "id, device, action, issued_ms, expires_ms, issued_by, state, result_ms, message, upload_token_sha256, upload_bytes";

fn row_of(r: &sqlx::sqlite::SqliteRow) -> Result<CommandRow, StoreError> {
    let c = |e: String| corrupt("commands", e);
    let device: String = r.get("device");
    let action: String = r.get("action");
    let state: String = r.get("state");
    Ok(CommandRow {
        id: r.get("id"),
        device: DeviceId::parse(&device).map_err(|e| c(e.to_string()))?,
        action: commands::parse_action(&action).map_err(|e| c(e.to_string()))?,
        issued_ms: to_u64(r.get("issued_ms")),
        expires_ms: to_u64(r.get("expires_ms")),
        issued_by: r.get("issued_by"),
        state: CommandState::parse(&state).ok_or_else(|| c(format!("state {state:?}")))?,
        result_ms: r.get::<Option<i64>, _>("result_ms").map(to_u64),
        message: r.get("message"),
        upload_token_sha256: r.get("upload_token_sha256"),
        upload_bytes: r.get::<Option<i64>, _>("upload_bytes").map(to_u64),
    })
}

/// Settle a command with its device's answer (`domain::commands::settle`),
/// inside the batched writer's transaction. Returns the new state when it
/// changed; an answer for a command the controller does not hold (sent
/// before commands were stored, or another device's id) changes nothing.
pub(super) async fn settle(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    device: &DeviceId,
    id: &str,
    ok: bool,
    message: &str,
    at_ms: u64,
    received_ms: u64,
) -> Result<Option<CommandState>, StoreError> {
    let Some(r) = sqlx::query(
        "SELECT state, expires_ms, upload_bytes FROM commands WHERE id = ? AND device = ?",
    )
    .bind(id)
    .bind(device.as_str())
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let state: String = r.get("state");
    let held = CommandState::parse(&state)
        .ok_or_else(|| corrupt("commands", format!("state {state:?}")))?;
    // The device's clock may run ahead; an answer cannot come later than it
    // was received. (No offset is known here to correct a clock behind:
    // the agent judges expiry on the controller's clock for that.)
    let at_ms = at_ms.min(received_ms);
    let uploaded = r.get::<Option<i64>, _>("upload_bytes").is_some();
    let Some(new) = commands::settle(held, to_u64(r.get("expires_ms")), ok, at_ms, uploaded) else {
        return Ok(None);
    };
    sqlx::query("UPDATE commands SET state = ?, result_ms = ?, message = ? WHERE id = ?")
        .bind(new.as_str())
        .bind(to_i64(received_ms))
        .bind(message)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(Some(new))
}

impl Store {
    /// Store commands just made (state `sent`), in one transaction, before
    /// any is published.
    pub async fn insert_commands(&self, rows: &[CommandRow]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for c in rows {
            sqlx::query(&format!(
                "INSERT INTO commands ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&c.id)
            .bind(c.device.as_str())
            .bind(commands::action_name(c.action))
            .bind(to_i64(c.issued_ms))
            .bind(to_i64(c.expires_ms))
            .bind(&c.issued_by)
            .bind(c.state.as_str())
            .bind(c.result_ms.map(to_i64))
            .bind(&c.message)
            .bind(&c.upload_token_sha256)
            .bind(c.upload_bytes.map(to_i64))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A command that could not be published: failed, with why.
    pub async fn fail_command(&self, id: &str, now_ms: u64, why: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE commands SET state = 'failed', result_ms = ?, message = ?, upload_token_sha256 = NULL
             WHERE id = ? AND state = 'sent'",
        )
        .bind(to_i64(now_ms))
        .bind(why)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A device's newest commands, newest first.
    pub async fn device_commands(
        &self,
        device: &DeviceId,
        limit: u32,
    ) -> Result<Vec<CommandRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM commands WHERE device = ? ORDER BY issued_ms DESC, id DESC LIMIT ?"
        ))
        .bind(device.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_of).collect()
    }

    pub async fn command(&self, id: &str) -> Result<Option<CommandRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM commands WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_of).transpose()
    }

    /// Mark `expired` every command still `sent` past its expiry; returns
    /// how many. Their upload tokens are spent with them.
    pub async fn expire_commands(&self, now_ms: u64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE commands SET state = 'expired', result_ms = ?1,
               message = 'no answer from the device before the command expired',
               upload_token_sha256 = NULL
             WHERE state = 'sent' AND expires_ms < ?1",
        )
        .bind(to_i64(now_ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// What is held of `device`'s command `id` for an upload, read
    /// without taking the write lock: a request with any bearer is checked
    /// against it before anything is written.
    pub async fn upload_held(
        &self,
        device: &DeviceId,
        id: &str,
    ) -> Result<Option<HeldUpload>, StoreError> {
        sqlx::query(
            "SELECT action, expires_ms, upload_token_sha256 FROM commands WHERE id = ? AND device = ?",
        )
        .bind(id)
        .bind(device.as_str())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| {
            let action: String = r.get("action");
            Ok(HeldUpload {
                action: commands::parse_action(&action)
                    .map_err(|e| corrupt("commands", e.to_string()))?,
                expires_ms: to_u64(r.get("expires_ms")),
                token_sha256: r.get("upload_token_sha256"),
            })
        })
        .transpose()
    }

    /// Spend the upload token of `device`'s command `id` if
    /// `domain::commands::check_upload` allows it. The update names the
    /// token's hash and the expiry, so of racing requests exactly one
    /// spends it; the others get the refusal the command now earns.
    pub async fn spend_upload_token(
        &self,
        device: &DeviceId,
        id: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<Result<(), commands::UploadRefused>, StoreError> {
        let held = self.upload_held(device, id).await?;
        let verdict = commands::check_upload(device, id, held.as_ref(), token, now_ms);
        if verdict.is_err() {
            return Ok(verdict);
        }
        let spent = sqlx::query(
            "UPDATE commands SET upload_token_sha256 = NULL
             WHERE id = ? AND device = ? AND action = 'upload-logs'
               AND upload_token_sha256 = ? AND expires_ms >= ?",
        )
        .bind(id)
        .bind(device.as_str())
        .bind(commands::token_sha256(token))
        .bind(to_i64(now_ms))
        .execute(&self.pool)
        .await?;
        if spent.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        // Spent or expired since it was read.
        let held = self.upload_held(device, id).await?;
        Ok(Err(
            match commands::check_upload(device, id, held.as_ref(), token, now_ms) {
                Err(e) => e,
                Ok(()) => commands::UploadRefused::Used(id.to_owned()),
            },
        ))
    }

    /// Record the size of the logs stored for command `id`.
    pub async fn set_upload_bytes(&self, id: &str, bytes: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE commands SET upload_bytes = ? WHERE id = ?")
            .bind(to_i64(bytes))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fleet_protocol::{Event, EventKind};

    use super::*;
    use crate::domain::fleet::Registration;
    use crate::domain::lifecycle::Lifecycle;
    use crate::store::{Batch, WriteOp};

    async fn store_with(device: &DeviceId) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("fleet.db")).await.unwrap();
        store
            .upsert_devices(&[Registration {
                id: device.clone(),
                model: "ballot-box-v2".parse().unwrap(),
                province: "IR-02".parse().unwrap(),
                county: None,
                station: None,
                lifecycle: Lifecycle::Deployed,
                registered_at_ms: 0,
            }])
            .await
            .unwrap();
        (dir, store)
    }

    fn row(device: &DeviceId, id: &str, expires_ms: u64, token: Option<&str>) -> CommandRow {
        CommandRow {
            id: id.into(),
            device: device.clone(),
            action: if token.is_some() {
                Action::UploadLogs
            } else {
                Action::Reboot
            },
            issued_ms: 10,
            expires_ms,
            issued_by: "ops (t1)".into(),
            state: CommandState::Sent,
            result_ms: None,
            message: String::new(),
            upload_token_sha256: token.map(commands::token_sha256),
            upload_bytes: None,
        }
    }

    fn answer(seq: u64, at_ms: u64, id: &str, ok: bool) -> Event {
        Event {
            seq,
            at_ms,
            kind: EventKind::CommandResult {
                id: id.into(),
                ok,
                message: format!("answer {seq}"),
            },
            boot: Some(1),
        }
    }

    #[tokio::test]
    async fn the_first_answer_settles_a_command_and_the_sweeper_expires_the_silent() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let (_dir, store) = store_with(&dev).await;
        store
            .insert_commands(&[
                row(&dev, "c-ok", 1000, None),
                row(&dev, "c-silent", 1000, None),
            ])
            .await
            .unwrap();
        let mut batch = Batch::default();
        batch.push(WriteOp::Event(
            dev.clone(),
            answer(1, 500, "c-ok", true),
            600,
        ));
        // A later answer for the same command, and one for a command not held.
        batch.push(WriteOp::Event(
            dev.clone(),
            answer(2, 700, "c-ok", false),
            800,
        ));
        batch.push(WriteOp::Event(
            dev.clone(),
            answer(3, 700, "c-other", true),
            800,
        ));
        let w = store.write_batch(&batch, 100).await.unwrap();
        assert_eq!(w.command_results, [CommandState::Ok]);
        let ok = store.command("c-ok").await.unwrap().unwrap();
        assert_eq!(
            (ok.state, ok.result_ms, ok.message.as_str()),
            (CommandState::Ok, Some(600), "answer 1")
        );
        assert_eq!(
            store.expire_commands(1000).await.unwrap(),
            0,
            "at the expiry it waits"
        );
        assert_eq!(store.expire_commands(1001).await.unwrap(), 1);
        let silent = store.command("c-silent").await.unwrap().unwrap();
        assert_eq!(silent.state, CommandState::Expired);
        assert_eq!(
            store.command("c-ok").await.unwrap().unwrap().state,
            CommandState::Ok
        );
        let shown: Vec<String> = store
            .device_commands(&dev, 20)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
    }

    #[tokio::test]
    async fn an_upload_token_is_spent_once_and_only_for_its_device() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let other = DeviceId::parse("BB-2").unwrap();
        let (_dir, store) = store_with(&dev).await;
        store
            .insert_commands(&[row(&dev, "c-up", 1000, Some("secret"))])
            .await
            .unwrap();
        assert!(matches!(
            store
                .spend_upload_token(&other, "c-up", "secret", 10)
                .await
                .unwrap(),
            Err(commands::UploadRefused::NoSuchCommand { .. })
        ));
        assert!(matches!(
            store
                .spend_upload_token(&dev, "c-up", "guess", 10)
                .await
                .unwrap(),
            Err(commands::UploadRefused::BadToken(_))
        ));
        assert_eq!(
            store
                .spend_upload_token(&dev, "c-up", "secret", 10)
                .await
                .unwrap(),
            Ok(())
        );
        assert!(matches!(
            store
                .spend_upload_token(&dev, "c-up", "secret", 11)
                .await
                .unwrap(),
            Err(commands::UploadRefused::Used(_))
        ));
    }

    #[tokio::test]
    async fn a_success_in_time_wins_over_the_sweeper_and_a_late_one_does_not() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let (_dir, store) = store_with(&dev).await;
        store
            .insert_commands(&[
                row(&dev, "c-in-time", 1000, None),
                row(&dev, "c-late", 1000, None),
            ])
            .await
            .unwrap();
        assert_eq!(store.expire_commands(1001).await.unwrap(), 2);
        let mut batch = Batch::default();
        // Ran at its expiry, answered after the sweeper.
        batch.push(WriteOp::Event(
            dev.clone(),
            answer(1, 1000, "c-in-time", true),
            1500,
        ));
        batch.push(WriteOp::Event(
            dev.clone(),
            answer(2, 1001, "c-late", true),
            1500,
        ));
        let w = store.write_batch(&batch, 100).await.unwrap();
        assert_eq!(w.command_results, [CommandState::Ok]);
        let won = store.command("c-in-time").await.unwrap().unwrap();
        assert_eq!(
            (won.state, won.result_ms, won.message.as_str()),
            (CommandState::Ok, Some(1500), "answer 1")
        );
        assert_eq!(
            store.command("c-late").await.unwrap().unwrap().state,
            CommandState::Expired
        );
    }

    #[tokio::test]
    async fn once_logs_are_stored_a_failure_does_not_settle_the_command() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let (_dir, store) = store_with(&dev).await;
        store
            .insert_commands(&[row(&dev, "c-up", 1000, Some("secret"))])
            .await
            .unwrap();
        assert_eq!(
            store
                .spend_upload_token(&dev, "c-up", "secret", 10)
                .await
                .unwrap(),
            Ok(())
        );
        store.set_upload_bytes("c-up", 42).await.unwrap();
        // A re-delivery's upload was refused (token spent) and said so
        // before the first run's success arrived.
        let mut batch = Batch::default();
        batch.push(WriteOp::Event(
            dev.clone(),
            answer(1, 20, "c-up", false),
            30,
        ));
        batch.push(WriteOp::Event(dev.clone(), answer(2, 15, "c-up", true), 31));
        let w = store.write_batch(&batch, 100).await.unwrap();
        assert_eq!(w.command_results, [CommandState::Ok]);
        let held = store.command("c-up").await.unwrap().unwrap();
        assert_eq!(
            (held.state, held.upload_bytes),
            (CommandState::Ok, Some(42))
        );
    }

    #[tokio::test]
    async fn a_device_clock_ahead_does_not_turn_an_in_time_failure_into_an_expiry() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let (_dir, store) = store_with(&dev).await;
        store
            .insert_commands(&[row(&dev, "c-1", 1000, None)])
            .await
            .unwrap();
        let mut batch = Batch::default();
        // Stamped an hour ahead, received before the expiry.
        batch.push(WriteOp::Event(
            dev.clone(),
            answer(1, 3_600_500, "c-1", false),
            500,
        ));
        let w = store.write_batch(&batch, 100).await.unwrap();
        assert_eq!(w.command_results, [CommandState::Failed]);
    }
}
