//! Who may call what: the operator roles of bearer tokens and the
//! permissions they grant. The controller checks requests against these and
//! the OpenAPI document lists, per operation, the roles that may call it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The role of an operator token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    CentralOps,
    /// Scoped to the provinces named when the token was made.
    ProvinceTech,
    Warehouse,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::CentralOps,
        Role::ProvinceTech,
        Role::Warehouse,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::CentralOps => "central-ops",
            Role::ProvinceTech => "province-tech",
            Role::Warehouse => "warehouse",
            Role::Viewer => "viewer",
        }
    }

    /// What the role may do (province scope comes on top, for province-tech).
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::CentralOps => matches!(
                p,
                ReadFleet
                    | RegisterDevices
                    | ImportRegistry
                    | SetBaseline
                    | ReadAudit
                    | MoveDevices
                    | RetireDevices
                    | ReassignDevices
                    | SendCommands
                    | ManageFirmware
                    | ManageRollouts
            ),
            Role::ProvinceTech => matches!(p, ReadFleet | SendCommands),
            Role::Warehouse => matches!(p, ReadFleet | RegisterDevices | MoveDevices),
            Role::Viewer => matches!(p, ReadFleet),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}; one of: {}",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

/// Something a role may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Readiness, devices, registry, baselines, broker address, metrics.
    ReadFleet,
    RegisterDevices,
    ImportRegistry,
    SetBaseline,
    ManageTokens,
    ReadAudit,
    /// Ship and deploy devices (warehouse work).
    MoveDevices,
    /// Retire a device and revoke its certificate.
    RetireDevices,
    /// Change the model, province, county or station of a device already
    /// shipped or deployed (registration alone may not).
    ReassignDevices,
    /// Send a device a one-off command (reboot, run checks, renew its
    /// certificate); province-tech only to its provinces' devices. Also
    /// sets the firmware or agent a device should run.
    SendCommands,
    /// Upload firmware images and their signed targets metadata, publish a
    /// new root, set freeze windows.
    ManageFirmware,
    /// Create, start, pause, resume, abort a rollout and retry its failed
    /// devices.
    ManageRollouts,
}

impl Permission {
    pub const ALL: [Permission; 12] = [
        Permission::ReadFleet,
        Permission::RegisterDevices,
        Permission::ImportRegistry,
        Permission::SetBaseline,
        Permission::ManageTokens,
        Permission::ReadAudit,
        Permission::MoveDevices,
        Permission::RetireDevices,
        Permission::ReassignDevices,
        Permission::SendCommands,
        Permission::ManageFirmware,
        Permission::ManageRollouts,
    ];

    /// The name the OpenAPI document uses (`x-permissions`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadFleet => "read-fleet",
            Permission::RegisterDevices => "register-devices",
            Permission::ImportRegistry => "import-registry",
            Permission::SetBaseline => "set-baseline",
            Permission::ManageTokens => "manage-tokens",
            Permission::ReadAudit => "read-audit",
            Permission::MoveDevices => "move-devices",
            Permission::RetireDevices => "retire-devices",
            Permission::ReassignDevices => "reassign-devices",
            Permission::SendCommands => "send-commands",
            Permission::ManageFirmware => "manage-firmware",
            Permission::ManageRollouts => "manage-rollouts",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_parses_from_its_name_and_serializes_to_it() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(r.to_string(), r.as_str());
        }
    }

    #[test]
    fn an_unknown_role_is_refused_with_the_list_of_roles() {
        assert_eq!(
            "root".parse::<Role>().unwrap_err(),
            "unknown role \"root\"; one of: admin, central-ops, province-tech, warehouse, viewer"
        );
    }

    #[test]
    fn roles_allow_what_the_controller_allows_today() {
        use Permission::*;
        let allowed = |r: Role| -> Vec<Permission> {
            Permission::ALL
                .into_iter()
                .filter(|p| r.allows(*p))
                .collect()
        };
        assert_eq!(allowed(Role::Admin), Permission::ALL);
        assert_eq!(
            allowed(Role::CentralOps),
            [
                ReadFleet,
                RegisterDevices,
                ImportRegistry,
                SetBaseline,
                ReadAudit,
                MoveDevices,
                RetireDevices,
                ReassignDevices,
                SendCommands,
                ManageFirmware,
                ManageRollouts
            ]
        );
        assert_eq!(allowed(Role::ProvinceTech), [ReadFleet, SendCommands]);
        assert_eq!(
            allowed(Role::Warehouse),
            [ReadFleet, RegisterDevices, MoveDevices]
        );
        assert_eq!(allowed(Role::Viewer), [ReadFleet]);
    }
}
