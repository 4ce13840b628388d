//! Whether the outbox writes its file or keeps records in memory, and when
//! it tries the file again (pure).
//!
//! A failed write (disk full, read-only, an I/O error) moves the outbox to
//! memory: it is reported once per episode, and the file is tried again
//! (reopened: redb refuses writes after an I/O error until then) every
//! `retry` until it works; then the records held in memory are written to
//! it and the episode ends.

/// Where records go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Committed to the file.
    File,
    /// Kept in memory since `since_ms`, because of `reason`; the file is
    /// tried again at `next_try_ms`.
    Memory {
        reason: String,
        since_ms: u64,
        next_try_ms: u64,
        tries: u32,
    },
}

/// What happened to the file, or that time passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskInput {
    /// Opening, writing or removing failed.
    Failed(String),
    /// Time passed (the runtime ticks while in memory).
    Tick,
    /// The answer to [`DiskAction::Retry`]: the file reopened and took the
    /// records held in memory, or why not.
    Retried(Result<(), String>),
}

/// What the outbox does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskAction {
    /// A new episode: report it (one `storage-fault` event).
    Report(String),
    /// Reopen the file and write the records held in memory to it, in key
    /// order; answer with [`DiskInput::Retried`].
    Retry,
    /// The file works again after `tries` attempts over `after_ms`.
    Recovered {
        was: String,
        after_ms: u64,
        tries: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    retry_ms: u64,
    mode: Mode,
}

impl Disk {
    /// Start with a working file; `retry_ms`: between attempts to use it
    /// again after a failure.
    pub fn new(retry_ms: u64) -> Self {
        Self {
            retry_ms: retry_ms.max(1),
            mode: Mode::File,
        }
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Why records are in memory, if they are.
    pub fn fault(&self) -> Option<&str> {
        match &self.mode {
            Mode::File => None,
            Mode::Memory { reason, .. } => Some(reason),
        }
    }

    /// When the file is tried next, if it is failing.
    pub fn next_try_ms(&self) -> Option<u64> {
        match &self.mode {
            Mode::File => None,
            Mode::Memory { next_try_ms, .. } => Some(*next_try_ms),
        }
    }

    pub fn on(&mut self, input: DiskInput, now_ms: u64) -> Vec<DiskAction> {
        match (&mut self.mode, input) {
            (Mode::File, DiskInput::Failed(reason)) => {
                self.mode = Mode::Memory {
                    reason: reason.clone(),
                    since_ms: now_ms,
                    next_try_ms: now_ms.saturating_add(self.retry_ms),
                    tries: 0,
                };
                vec![DiskAction::Report(reason)]
            }
            // Still failing: said already; the latest reason is kept.
            (Mode::Memory { reason, .. }, DiskInput::Failed(now_reason))
            | (Mode::Memory { reason, .. }, DiskInput::Retried(Err(now_reason))) => {
                *reason = now_reason;
                vec![]
            }
            (
                Mode::Memory {
                    next_try_ms, tries, ..
                },
                DiskInput::Tick,
            ) => {
                if now_ms < *next_try_ms {
                    return vec![];
                }
                *tries += 1;
                *next_try_ms = now_ms.saturating_add(self.retry_ms);
                vec![DiskAction::Retry]
            }
            (
                Mode::Memory {
                    reason,
                    since_ms,
                    tries,
                    ..
                },
                DiskInput::Retried(Ok(())),
            ) => {
                let recovered = DiskAction::Recovered {
                    was: std::mem::take(reason),
                    after_ms: now_ms.saturating_sub(*since_ms),
                    tries: *tries,
                };
                self.mode = Mode::File;
                vec![recovered]
            }
            (Mode::File, DiskInput::Tick | DiskInput::Retried(_)) => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_once_and_the_file_tried_again_only_when_due() {
        let mut d = Disk::new(1000);
        assert_eq!(d.on(DiskInput::Tick, 0), vec![]);
        assert_eq!(
            d.on(DiskInput::Failed("disk full".into()), 10),
            vec![DiskAction::Report("disk full".into())]
        );
        assert_eq!(d.fault(), Some("disk full"));
        // More failures in the same episode: not reported again.
        assert_eq!(d.on(DiskInput::Failed("read-only".into()), 20), vec![]);
        assert_eq!(d.fault(), Some("read-only"), "the latest reason");
        assert_eq!(d.on(DiskInput::Tick, 500), vec![]);
        assert_eq!(d.on(DiskInput::Tick, 1009), vec![]);
        assert_eq!(d.on(DiskInput::Tick, 1010), vec![DiskAction::Retry]);
        assert_eq!(d.next_try_ms(), Some(2010));
        assert_eq!(d.on(DiskInput::Tick, 1500), vec![], "not twice at once");
    }

    #[test]
    fn a_failed_retry_waits_for_the_next_one_and_a_good_one_ends_the_episode() {
        let mut d = Disk::new(1000);
        d.on(DiskInput::Failed("disk full".into()), 0);
        assert_eq!(d.on(DiskInput::Tick, 1000), vec![DiskAction::Retry]);
        assert_eq!(
            d.on(DiskInput::Retried(Err("still full".into())), 1001),
            vec![]
        );
        assert_eq!(d.fault(), Some("still full"));
        assert_eq!(d.on(DiskInput::Tick, 1999), vec![]);
        assert_eq!(d.on(DiskInput::Tick, 2000), vec![DiskAction::Retry]);
        assert_eq!(
            d.on(DiskInput::Retried(Ok(())), 2002),
            vec![DiskAction::Recovered {
                was: "still full".into(),
                after_ms: 2002,
                tries: 2
            }]
        );
        assert_eq!(d.mode(), &Mode::File);
        assert_eq!(d.next_try_ms(), None);
        // A late answer or a tick changes nothing now.
        assert_eq!(d.on(DiskInput::Retried(Ok(())), 2003), vec![]);
        assert_eq!(d.on(DiskInput::Tick, 9000), vec![]);
    }

    #[test]
    fn a_new_failure_after_recovery_is_a_new_episode_reported_again() {
        let mut d = Disk::new(50);
        d.on(DiskInput::Failed("disk full".into()), 0);
        d.on(DiskInput::Tick, 50);
        d.on(DiskInput::Retried(Ok(())), 51);
        assert_eq!(
            d.on(DiskInput::Failed("read-only".into()), 100),
            vec![DiskAction::Report("read-only".into())]
        );
        assert_eq!(d.next_try_ms(), Some(150));
    }
}
