//! Desired state per device: the controller's own record of what each
//! device should run (the broker's retained message is a cache of it), and
//! the fleet's freeze windows, which every desired state sent carries.

use fleet_protocol::{Desired, DeviceId, FreezeWindow, TargetFirmware, Version};
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};

/// A target read back from its two columns (both set, or neither).
fn target(
    version: Option<String>,
    manifest: Option<String>,
    attempt: i64,
) -> Result<Option<TargetFirmware>, String> {
    match (version, manifest) {
        (Some(v), Some(manifest)) => Ok(Some(TargetFirmware {
            version: Version::parse(&v).map_err(|e| e.to_string())?,
            manifest,
            attempt: u32::try_from(attempt).map_err(|e| e.to_string())?,
        })),
        _ => Ok(None),
    }
}

impl Store {
    /// Record a device's desired state (replacing what was there). Its
    /// freeze windows are not the device's own: see [`Store::set_freeze`].
    pub async fn set_desired(
        &self,
        device: &DeviceId,
        desired: &Desired,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO desired (device, config_rev, firmware_version, firmware_manifest,
               agent_version, agent_manifest, updated_ms, firmware_attempt, agent_attempt)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(device) DO UPDATE SET config_rev = excluded.config_rev,
               firmware_version = excluded.firmware_version,
               firmware_manifest = excluded.firmware_manifest,
               agent_version = excluded.agent_version,
               agent_manifest = excluded.agent_manifest, updated_ms = excluded.updated_ms,
               firmware_attempt = excluded.firmware_attempt,
               agent_attempt = excluded.agent_attempt",
        )
        .bind(device.as_str())
        .bind(i64::from(desired.config_rev))
        .bind(desired.firmware.as_ref().map(|f| f.version.to_string()))
        .bind(desired.firmware.as_ref().map(|f| f.manifest.clone()))
        .bind(desired.agent.as_ref().map(|f| f.version.to_string()))
        .bind(desired.agent.as_ref().map(|f| f.manifest.clone()))
        .bind(to_i64(now_ms))
        .bind(i64::from(
            desired.firmware.as_ref().map_or(0, |f| f.attempt),
        ))
        .bind(i64::from(desired.agent.as_ref().map_or(0, |f| f.attempt)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// When a device's desired state was last stored (`None`: never).
    pub async fn desired_updated_ms(&self, device: &DeviceId) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT updated_ms FROM desired WHERE device = ?")
            .bind(device.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| to_u64(r.get(0))))
    }

    /// Every stored desired state, for the in-memory fleet at start
    /// (without freeze windows: [`Store::freeze_windows`]).
    pub async fn load_desired(&self) -> Result<Vec<(DeviceId, Desired)>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, config_rev, firmware_version, firmware_manifest,
               agent_version, agent_manifest, firmware_attempt, agent_attempt FROM desired",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get(0);
                let c = |e: String| corrupt("desired", format!("{id}: {e}"));
                Ok((
                    DeviceId::parse(&id).map_err(|e| c(e.to_string()))?,
                    Desired {
                        config_rev: u32::try_from(to_u64(r.get(1)))
                            .map_err(|e| c(e.to_string()))?,
                        firmware: target(r.get(2), r.get(3), r.get(6)).map_err(c)?,
                        agent: target(r.get(4), r.get(5), r.get(7)).map_err(c)?,
                        freeze: Vec::new(),
                    },
                ))
            })
            .collect()
    }

    /// Replace the fleet's freeze windows (with no reasons).
    pub async fn set_freeze(&self, windows: &[FreezeWindow]) -> Result<(), StoreError> {
        let with: Vec<(FreezeWindow, String)> =
            windows.iter().map(|w| (*w, String::new())).collect();
        self.set_freeze_with_reasons(&with).await
    }

    /// Replace the fleet's freeze windows, each with why it is there.
    pub async fn set_freeze_with_reasons(
        &self,
        windows: &[(FreezeWindow, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM freeze_windows")
            .execute(&mut *tx)
            .await?;
        for (w, reason) in windows {
            sqlx::query(
                "INSERT INTO freeze_windows (from_ms, to_ms, reason) VALUES (?, ?, ?)
                 ON CONFLICT DO NOTHING",
            )
            .bind(to_i64(w.from_ms))
            .bind(to_i64(w.to_ms))
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The fleet's freeze windows, by start.
    pub async fn freeze_windows(&self) -> Result<Vec<FreezeWindow>, StoreError> {
        Ok(self
            .freeze_windows_with_reasons()
            .await?
            .into_iter()
            .map(|(w, _)| w)
            .collect())
    }

    /// The fleet's freeze windows with their reasons, by start.
    pub async fn freeze_windows_with_reasons(
        &self,
    ) -> Result<Vec<(FreezeWindow, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_ms, to_ms, reason FROM freeze_windows ORDER BY from_ms, to_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    FreezeWindow {
                        from_ms: to_u64(r.get(0)),
                        to_ms: to_u64(r.get(1)),
                    },
                    r.get(2),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_agent_target_and_the_freeze_windows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        let store = Store::open(&path).await.unwrap();
        let id = DeviceId::parse("BB-1").unwrap();
        sqlx::query(
            "INSERT INTO devices (id, model, province, lifecycle, registered_at)
             VALUES ('BB-1', 'ballot-box-v2', 'IR-23', 'enrolled', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let t = |v: &str, m: &str| TargetFirmware {
            version: Version::parse(v).unwrap(),
            manifest: m.into(),
            attempt: 0,
        };
        let desired = Desired {
            config_rev: 2,
            // A rollout's retry raised the firmware's attempt.
            firmware: Some(TargetFirmware {
                attempt: 3,
                ..t("2.5.0", "firmware/ballot-box-v2/2.5.0.tar")
            }),
            agent: Some(t("0.3.0", "agent/x86-64-linux/0.3.0")),
            freeze: Vec::new(),
        };
        store.set_desired(&id, &desired, 5).await.unwrap();
        let windows = [
            FreezeWindow {
                from_ms: 10,
                to_ms: 20,
            },
            FreezeWindow {
                from_ms: 30,
                to_ms: 40,
            },
        ];
        store
            .set_freeze_with_reasons(&[
                (windows[0], "election day".to_owned()),
                (windows[1], String::new()),
            ])
            .await
            .unwrap();
        store.close().await;

        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.load_desired().await.unwrap(), [(id, desired)]);
        assert_eq!(store.freeze_windows().await.unwrap(), windows);
        assert_eq!(
            store.freeze_windows_with_reasons().await.unwrap()[0],
            (windows[0], "election day".to_owned())
        );
        store.set_freeze(&[]).await.unwrap();
        assert!(store.freeze_windows().await.unwrap().is_empty());
    }
}
