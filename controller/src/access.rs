//! Access: operator tokens (cached in memory, stored hashed) and the audit
//! log writer (appends serialized, the chain's head kept in a file beside
//! the database so a cut tail is noticed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use fleet_protocol::ProvinceCode;
use serde_json::Value;

use crate::clock::unix_ms;
use crate::domain::audit::{self, Broken, Entry, Head};
use crate::domain::auth::{self, Principal, Role, TokenRefused};
use crate::domain::throttle::{self, LogGate, Throttle};
use crate::store::{Store, StoreError, TokenRow};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit head {path} does not parse ({reason}); no change is recorded until it is looked into")]
    HeadCorrupt { path: PathBuf, reason: String },
    #[error("cannot read or write the audit head {path}: {source}")]
    Head {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Scope(#[from] auth::ScopeError),
    #[error("a token name has 1 to 64 characters")]
    BadName,
    #[error(transparent)]
    BadExpiry(#[from] auth::BadExpiry),
    #[error("the audit log does not match its head file ({0}); no change is recorded until `fleetctl audit verify` is looked into")]
    Tampered(String),
}

/// Who made a change and from where, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub source: String,
}

impl Caller {
    /// The controller itself (init, start-up).
    pub fn system(what: &str) -> Self {
        Self {
            principal: Principal {
                token_id: "-".into(),
                name: what.into(),
                role: Role::Admin,
                provinces: vec![],
            },
            source: "local".into(),
        }
    }
}

pub struct Access {
    store: Store,
    /// The unrevoked tokens, expired ones too: expiry is checked against
    /// `now` on every request, so the cache never serves an expired token.
    by_hash: RwLock<HashMap<String, Live>>,
    audit_lock: tokio::sync::Mutex<()>,
    head_path: PathBuf,
    /// Failed authentications: one log line per source address per window.
    auth_failure_log: Mutex<LogGate<String>>,
    /// Refused enrolments per source address.
    enrol_refusals: Mutex<Throttle<String>>,
    /// Refused log uploads per source address.
    upload_refusals: Mutex<Throttle<String>>,
}

/// An unrevoked token in the cache.
struct Live {
    principal: Principal,
    expires_at_ms: Option<u64>,
}

fn live(t: &TokenRow) -> Live {
    Live {
        principal: Principal {
            token_id: t.id.clone(),
            name: t.name.clone(),
            role: t.role,
            provinces: t.provinces.clone(),
        },
        expires_at_ms: t.expires_at_ms,
    }
}

impl Access {
    pub async fn load(store: Store, data_dir: &Path) -> Result<Self, AccessError> {
        let mut by_hash = HashMap::new();
        for t in store.tokens().await? {
            if t.revoked_at_ms.is_none() {
                by_hash.insert(t.hash.clone(), live(&t));
            }
        }
        Ok(Self {
            store,
            by_hash: RwLock::new(by_hash),
            audit_lock: tokio::sync::Mutex::new(()),
            head_path: data_dir.join("audit.head"),
            auth_failure_log: Mutex::new(LogGate::new(throttle::AUTH_FAILURE_LOG_WINDOW_MS)),
            enrol_refusals: Mutex::new(Throttle::new(
                throttle::ENROL_REFUSALS_PER_WINDOW,
                throttle::ENROL_REFUSAL_WINDOW_MS,
            )),
            upload_refusals: Mutex::new(Throttle::new(
                throttle::UPLOAD_REFUSALS_PER_WINDOW,
                throttle::UPLOAD_REFUSAL_WINDOW_MS,
            )),
        })
    }

    /// The principal a presented token stands for at `now`: unknown,
    /// revoked and expired tokens stand for nobody.
    pub fn authenticate(&self, token: &str, now: u64) -> Result<Principal, TokenRefused> {
        let cache = self
            .by_hash
            .read()
            .expect("token cache lock is never poisoned");
        let t = cache
            .get(&auth::token_hash(token))
            .ok_or(TokenRefused::Invalid)?;
        auth::check_expiry(&t.principal, t.expires_at_ms, now)
    }

    /// A failed authentication from `source` at `now`: `Some(n)` when it is
    /// to be logged (`n` failures from there were not, since the last line).
    pub fn auth_failure_to_log(&self, source: &str, now: u64) -> Option<u64> {
        self.auth_failure_log
            .lock()
            .expect("auth failure log gate is never poisoned")
            .pass(&source.to_owned(), now)
    }

    /// How long `source` must wait before it may try to enrol again, if it
    /// had too many refusals.
    pub fn enrolment_wait_ms(&self, source: &str, now: u64) -> Option<u64> {
        self.enrol_refusals
            .lock()
            .expect("enrolment throttle is never poisoned")
            .wait_ms(&source.to_owned(), now)
    }

    /// Count a refused enrolment from `source`.
    pub fn enrolment_refused(&self, source: &str, now: u64) {
        self.enrol_refusals
            .lock()
            .expect("enrolment throttle is never poisoned")
            .admit(&source.to_owned(), now);
    }

    /// How long `source` must wait before it may upload logs again, if it
    /// had too many refused uploads.
    pub fn upload_wait_ms(&self, source: &str, now: u64) -> Option<u64> {
        self.upload_refusals
            .lock()
            .expect("upload throttle is never poisoned")
            .wait_ms(&source.to_owned(), now)
    }

    /// Count a refused log upload from `source`.
    pub fn upload_refused(&self, source: &str, now: u64) {
        self.upload_refusals
            .lock()
            .expect("upload throttle is never poisoned")
            .admit(&source.to_owned(), now);
    }

    /// Create a token that never expires; returns its row and the token
    /// itself (shown once).
    pub async fn create_token(
        &self,
        by: &Caller,
        name: &str,
        role: Role,
        provinces: Vec<ProvinceCode>,
    ) -> Result<(TokenRow, String), AccessError> {
        self.create_token_expiring(by, name, role, provinces, None)
            .await
    }

    /// Create a token that expires after `expires_days` (never if `None`).
    pub async fn create_token_expiring(
        &self,
        by: &Caller,
        name: &str,
        role: Role,
        provinces: Vec<ProvinceCode>,
        expires_days: Option<u32>,
    ) -> Result<(TokenRow, String), AccessError> {
        auth::check_scope(role, &provinces)?;
        if name.is_empty() || name.len() > 64 {
            return Err(AccessError::BadName);
        }
        let now = unix_ms();
        let expires_at_ms = auth::token_expiry(now, expires_days)?;
        let (id, token) = auth::new_token();
        let row = TokenRow {
            id,
            name: name.to_owned(),
            role,
            provinces,
            hash: auth::token_hash(&token),
            created_at_ms: now,
            created_by: by.principal.actor(),
            revoked_at_ms: None,
            expires_at_ms,
        };
        let mut detail =
            serde_json::json!({ "name": row.name, "role": row.role, "provinces": row.provinces });
        if let Some(at) = row.expires_at_ms {
            detail["expires_at_ms"] = at.into();
        }
        self.record(by, "token.create", &row.id, detail).await?;
        if let Err(e) = self.store.insert_token(&row).await {
            self.failed(by, "token.create", &row.id, &e.to_string())
                .await;
            return Err(e.into());
        }
        self.by_hash
            .write()
            .expect("token cache lock is never poisoned")
            .insert(row.hash.clone(), live(&row));
        Ok((row, token))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, AccessError> {
        Ok(self.store.tokens().await?)
    }

    /// Revoke a token at once; false if no such live token.
    pub async fn revoke(&self, by: &Caller, id: &str) -> Result<bool, AccessError> {
        // The cache holds exactly the live tokens.
        let live = self
            .by_hash
            .read()
            .expect("token cache lock is never poisoned")
            .values()
            .any(|t| t.principal.token_id == id);
        if !live {
            return Ok(false);
        }
        self.record(by, "token.revoke", id, Value::Null).await?;
        match self.store.revoke_token(id, unix_ms()).await {
            Ok(_) => {}
            Err(e) => {
                self.failed(by, "token.revoke", id, &e.to_string()).await;
                return Err(e.into());
            }
        }
        self.by_hash
            .write()
            .expect("token cache lock is never poisoned")
            .retain(|_, t| t.principal.token_id != id);
        Ok(true)
    }

    /// Record that a change whose entry was written did not happen after
    /// all (best effort: the first entry stands either way).
    pub async fn failed(&self, by: &Caller, action: &str, target: &str, error: &str) {
        self.failed_as(
            &by.principal.actor(),
            by.principal.role.as_str(),
            &by.source,
            action,
            target,
            error,
        )
        .await;
    }

    pub async fn failed_as(
        &self,
        actor: &str,
        role: &str,
        source: &str,
        action: &str,
        target: &str,
        error: &str,
    ) {
        let action = format!("{action}.failed");
        if let Err(e) = self
            .record_as(
                actor,
                role,
                source,
                &action,
                target,
                serde_json::json!({ "error": error }),
            )
            .await
        {
            tracing::error!(error = %e, %action, target, "cannot record a failed change in the audit log");
        }
    }

    /// Append an audit entry for a change made by an operator.
    pub async fn record(
        &self,
        by: &Caller,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<Entry, AccessError> {
        self.record_as(
            &by.principal.actor(),
            by.principal.role.as_str(),
            &by.source,
            action,
            target,
            detail,
        )
        .await
    }

    /// Append an audit entry for a change made by someone who is not an
    /// operator (a device enrolling with its token).
    pub async fn record_as(
        &self,
        actor: &str,
        role: &str,
        source: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<Entry, AccessError> {
        let _serial = self.audit_lock.lock().await;
        // Never chain onto a log that differs from what was written.
        match self.head()? {
            Some(head) => match self.store.audit_entry(head.seq).await? {
                Some(e) if e.hash == head.hash => {}
                Some(_) => {
                    return Err(AccessError::Tampered(format!(
                        "entry #{} was altered",
                        head.seq
                    )))
                }
                None => {
                    return Err(AccessError::Tampered(format!(
                        "entry #{} is missing",
                        head.seq
                    )))
                }
            },
            None if self.store.audit_entry(1).await?.is_some() => {
                return Err(AccessError::Tampered("the head file is missing".into()))
            }
            None => {}
        }
        let entry = self
            .store
            .append_audit(Entry {
                seq: 0,
                at_ms: unix_ms(),
                actor: actor.to_owned(),
                role: role.to_owned(),
                action: action.to_owned(),
                target: target.to_owned(),
                source: source.to_owned(),
                detail: detail.to_string(),
                prev_hash: String::new(),
                hash: String::new(),
            })
            .await?;
        write_head(
            &self.head_path,
            &Head {
                seq: entry.seq,
                hash: entry.hash.clone(),
            },
        )?;
        Ok(entry)
    }

    /// Recover from a lost or damaged head file: check the chain on its own
    /// (every entry follows the one before), write the head anew from its
    /// last entry, and record that it was done, by whom and what the head
    /// file said before. A chain that is itself broken is not resealed: that
    /// is tampering to look into, not an accident.
    pub async fn reseal(&self, by: &Caller, why: &str) -> Result<Entry, AccessError> {
        let before = {
            let _serial = self.audit_lock.lock().await;
            let entries = self.store.audit_chain().await?;
            let last = entries.last().map(|e| Head {
                seq: e.seq,
                hash: e.hash.clone(),
            });
            if let Err(broken) = audit::verify(&entries, last.as_ref()) {
                return Err(AccessError::Tampered(format!(
                    "the chain itself is broken at entry #{}: {}; resealing would hide it",
                    broken.seq, broken.reason
                )));
            }
            let before = match self.head() {
                Ok(Some(h)) => serde_json::json!({ "seq": h.seq, "hash": h.hash }),
                Ok(None) => serde_json::json!("missing"),
                Err(e) => serde_json::json!(e.to_string()),
            };
            if let Some(head) = &last {
                write_head(&self.head_path, head)?;
            }
            serde_json::json!({ "head_before": before, "resealed_at": last.map(|h| h.seq), "why": why })
        };
        self.record(by, "audit.reseal", "audit", before).await
    }

    /// Check the whole chain against the head file.
    pub async fn verify(&self) -> Result<Result<u64, Broken>, AccessError> {
        let _serial = self.audit_lock.lock().await;
        let entries = self.store.audit_chain().await?;
        Ok(audit::verify(&entries, self.head()?.as_ref()))
    }

    /// Where the head is kept.
    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    /// The head file (see [`read_head`]).
    fn head(&self) -> Result<Option<Head>, AccessError> {
        read_head(&self.head_path)
    }
}

/// The head file at `path`; `None` only when there is none (a new log).
/// One that cannot be read or parsed is an error naming it, never "no
/// head".
pub fn read_head(path: &Path) -> Result<Option<Head>, AccessError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AccessError::Head {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AccessError::HeadCorrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Write the head so that a crash leaves the old head or the new one, never
/// a torn file: a temporary file, fsynced, renamed over the head, and the
/// directory fsynced so the rename itself survives a power cut.
pub fn write_head(path: &Path, head: &Head) -> Result<(), AccessError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| AccessError::Head {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&serde_json::to_vec(head).expect("head serializes"))
        .map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}
