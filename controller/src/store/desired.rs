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
) -> Result<Option<TargetFirmware>, String> {
    match (version, manifest) {
        (Some(v), Some(manifest)) => Ok(Some(TargetFirmware {
            version: Version::parse(&v).map_err(|e| e.to_string())?,
            manifest,
            attempt: 0,
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
               agent_version, agent_manifest, updated_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(device) DO UPDATE SET config_rev = excluded.config_rev,
               firmware_version = excluded.firmware_version,
               firmware_manifest = excluded.firmware_manifest,
               agent_version = excluded.agent_version,
               agent_manifest = excluded.agent_manifest, updated_ms = excluded.updated_ms",
        )
        .bind(device.as_str())
        .bind(i64::from(desired.config_rev))
        .bind(desired.firmware.as_ref().map(|f| f.version.to_string()))
        .bind(desired.firmware.as_ref().map(|f| f.manifest.clone()))
        .bind(desired.agent.as_ref().map(|f| f.version.to_string()))
        .bind(desired.agent.as_ref().map(|f| f.manifest.clone()))
        .bind(to_i64(now_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every stored desired state, for the in-memory fleet at start
    /// (without freeze windows: [`Store::freeze_windows`]).
    pub async fn load_desired(&self) -> Result<Vec<(DeviceId, Desired)>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, config_rev, firmware_version, firmware_manifest,
               agent_version, agent_manifest FROM desired",
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
                        firmware: target(r.get(2), r.get(3)).map_err(c)?,
                        agent: target(r.get(4), r.get(5)).map_err(c)?,
                        freeze: Vec::new(),
                    },
                ))
            })
            .collect()
    }

    /// Replace the fleet's freeze windows.
    pub async fn set_freeze(&self, windows: &[FreezeWindow]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM freeze_windows")
            .execute(&mut *tx)
            .await?;
        for w in windows {
            sqlx::query(
                "INSERT INTO freeze_windows (from_ms, to_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(to_i64(w.from_ms))
            .bind(to_i64(w.to_ms))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The fleet's freeze windows, by start.
    pub async fn freeze_windows(&self) -> Result<Vec<FreezeWindow>, StoreError> {
        let rows = sqlx::query("SELECT from_ms, to_ms FROM freeze_windows ORDER BY from_ms, to_ms")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| FreezeWindow {
                from_ms: to_u64(r.get(0)),
                to_ms: to_u64(r.get(1)),
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
            firmware: Some(t("2.5.0", "firmware/ballot-box-v2/2.5.0.tar")),
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
        store.set_freeze(&windows).await.unwrap();
        store.close().await;

        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.load_desired().await.unwrap(), [(id, desired)]);
        assert_eq!(store.freeze_windows().await.unwrap(), windows);
        store.set_freeze(&[]).await.unwrap();
        assert!(store.freeze_windows().await.unwrap().is_empty());
    }
}
