//! Desired state per device: the controller's own record of what each
//! device should run (the broker's retained message is a cache of it).

use fleet_protocol::{Desired, DeviceId, TargetFirmware, Version};
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};

impl Store {
    /// Record a device's desired state (replacing what was there).
    pub async fn set_desired(
        &self,
        device: &DeviceId,
        desired: &Desired,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO desired (device, config_rev, firmware_version, firmware_manifest, updated_ms)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(device) DO UPDATE SET config_rev = excluded.config_rev,
               firmware_version = excluded.firmware_version,
               firmware_manifest = excluded.firmware_manifest, updated_ms = excluded.updated_ms",
        )
        .bind(device.as_str())
        .bind(i64::from(desired.config_rev))
        .bind(desired.firmware.as_ref().map(|f| f.version.to_string()))
        .bind(desired.firmware.as_ref().map(|f| f.manifest.clone()))
        .bind(to_i64(now_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every stored desired state, for the in-memory fleet at start.
    pub async fn load_desired(&self) -> Result<Vec<(DeviceId, Desired)>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, config_rev, firmware_version, firmware_manifest FROM desired",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get(0);
                let c = |e: String| corrupt("desired", format!("{id}: {e}"));
                let version: Option<String> = r.get(2);
                let manifest: Option<String> = r.get(3);
                let firmware = match (version, manifest) {
                    (Some(v), Some(manifest)) => Some(TargetFirmware {
                        version: Version::parse(&v).map_err(|e| c(e.to_string()))?,
                        manifest,
                    }),
                    _ => None,
                };
                Ok((
                    DeviceId::parse(&id).map_err(|e| c(e.to_string()))?,
                    Desired {
                        config_rev: u32::try_from(to_u64(r.get(1)))
                            .map_err(|e| c(e.to_string()))?,
                        firmware,
                        agent: None,
                        freeze: Vec::new(),
                    },
                ))
            })
            .collect()
    }
}
