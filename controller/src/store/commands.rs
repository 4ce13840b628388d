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
    let Some(r) = sqlx::query("SELECT state, expires_ms FROM commands WHERE id = ? AND device = ?")
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
    let Some(new) = commands::settle(held, to_u64(r.get("expires_ms")), ok, at_ms) else {
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

    /// Take the upload token of `device`'s command `id` if
    /// `domain::commands::check_upload` allows it: checked and spent in one
    /// transaction, so a token is used once however many requests race.
    pub async fn spend_upload_token(
        &self,
        device: &DeviceId,
        id: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<Result<(), commands::UploadRefused>, StoreError> {
        let mut tx = self.write_tx().await?;
        let held = sqlx::query(
            "SELECT action, expires_ms, upload_token_sha256 FROM commands WHERE id = ? AND device = ?",
        )
        .bind(id)
        .bind(device.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| {
            let action: String = r.get("action");
            Ok::<_, StoreError>(HeldUpload {
                action: commands::parse_action(&action)
                    .map_err(|e| corrupt("commands", e.to_string()))?,
                expires_ms: to_u64(r.get("expires_ms")),
                token_sha256: r.get("upload_token_sha256"),
            })
        })
        .transpose()?;
        let verdict = commands::check_upload(device, id, held.as_ref(), token, now_ms);
        if verdict.is_ok() {
            sqlx::query("UPDATE commands SET upload_token_sha256 = NULL WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(verdict)
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
