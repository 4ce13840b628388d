//! Console sessions (pure: the caller brings the ids, the randomness and
//! `now`). A session maps the browser's cookie to the operator token it
//! was opened with, which never leaves the server: every request resolves
//! the token again, so a revoked or expired token ends its sessions at
//! once. A session also ends after `idle_ms` without a request, and
//! `max_age_ms` after it was opened, whatever happens.

use std::collections::HashMap;

use super::i18n::Lang;

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The operator token it was opened with (kept in memory only).
    pub token: String,
    /// The token's id (which user: the language is remembered per user).
    pub token_id: String,
    /// Every form carries it; a post without it is refused.
    pub csrf: String,
    pub lang: Lang,
    pub opened_ms: u64,
    pub last_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no such session")]
    Unknown,
    #[error("the session expired")]
    Expired,
}

/// Why no session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the console has {0} sessions open, its limit; try again later")]
pub struct Full(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub idle_ms: u64,
    pub max_age_ms: u64,
    /// At most this many sessions; past it, sign-ins are refused.
    pub max_sessions: usize,
    /// At most this many sessions per token; one more ends that token's
    /// least recently used (so one token cannot push others out).
    pub max_per_token: usize,
}

impl Limits {
    /// Idle past `idle_ms`, or opened `max_age_ms` ago.
    fn expired(&self, s: &Session, now: u64) -> bool {
        now.saturating_sub(s.last_ms) >= self.idle_ms
            || now.saturating_sub(s.opened_ms) >= self.max_age_ms
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_ms: 30 * 60_000,
            max_age_ms: 12 * 3_600_000,
            max_sessions: 10_000,
            max_per_token: 20,
        }
    }
}

#[derive(Debug, Default)]
pub struct Sessions {
    limits: Limits,
    by_id: HashMap<String, Session>,
}

impl Sessions {
    pub fn new(limits: Limits) -> Self {
        Sessions {
            limits,
            by_id: HashMap::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn expired(&self, s: &Session, now: u64) -> bool {
        self.limits.expired(s, now)
    }

    /// Open a session under `id` (random, from the caller). A token at
    /// its own limit loses its least recently used session; the console
    /// at its limit (expired sessions dropped first) refuses.
    pub fn open(&mut self, id: String, session: Session, now: u64) -> Result<(), Full> {
        let limits = self.limits;
        if self.by_id.len() >= limits.max_sessions {
            self.by_id.retain(|_, s| !limits.expired(s, now));
        }
        let mut own: Vec<(u64, String)> = self
            .by_id
            .iter()
            .filter(|(_, s)| s.token_id == session.token_id)
            .map(|(k, s)| (s.last_ms, k.clone()))
            .collect();
        own.sort();
        let excess = (own.len() + 1).saturating_sub(limits.max_per_token.max(1));
        for (_, k) in own.into_iter().take(excess) {
            self.by_id.remove(&k);
        }
        if self.by_id.len() >= limits.max_sessions.max(1) {
            return Err(Full(self.by_id.len()));
        }
        self.by_id.insert(id, session);
        Ok(())
    }

    /// The live session `id`, without restarting its idle time (a page
    /// polling for its numbers is not someone using the console); an
    /// expired one is ended.
    pub fn peek(&mut self, id: &str, now: u64) -> Result<Session, SessionError> {
        let s = self.by_id.get(id).ok_or(SessionError::Unknown)?;
        if self.expired(s, now) {
            self.by_id.remove(id);
            return Err(SessionError::Expired);
        }
        Ok(s.clone())
    }

    /// The live session `id`, its idle time restarted; an expired one is
    /// ended.
    pub fn touch(&mut self, id: &str, now: u64) -> Result<Session, SessionError> {
        let s = self.by_id.get(id).ok_or(SessionError::Unknown)?;
        if self.expired(s, now) {
            self.by_id.remove(id);
            return Err(SessionError::Expired);
        }
        let s = self.by_id.get_mut(id).ok_or(SessionError::Unknown)?;
        s.last_ms = s.last_ms.max(now);
        Ok(s.clone())
    }

    pub fn set_lang(&mut self, id: &str, lang: Lang) {
        if let Some(s) = self.by_id.get_mut(id) {
            s.lang = lang;
        }
    }

    /// Sign-out.
    pub fn close(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }
}

/// Equal in constant time (a CSRF token compared with what a form sent).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn session(now: u64) -> Session {
        Session {
            token: "sdg_t".into(),
            token_id: "tok-1".into(),
            csrf: "c".into(),
            lang: Lang::En,
            opened_ms: now,
            last_ms: now,
        }
    }

    fn sessions() -> Sessions {
        Sessions::new(Limits {
            idle_ms: 30 * MIN,
            max_age_ms: 12 * 60 * MIN,
            max_sessions: 3,
            max_per_token: 20,
        })
    }

    #[test]
    fn a_session_lives_while_used_and_ends_after_its_idle_time() {
        let mut s = sessions();
        s.open("a".into(), session(0), 0).unwrap();
        assert!(s.touch("a", 29 * MIN).is_ok());
        // Used at 29 min: idle counts from there.
        assert!(s.touch("a", 58 * MIN).is_ok());
        assert_eq!(s.touch("a", 88 * MIN), Err(SessionError::Expired));
        assert_eq!(s.touch("a", 89 * MIN), Err(SessionError::Unknown));
    }

    #[test]
    fn a_session_ends_at_its_maximum_age_even_when_used() {
        let mut s = sessions();
        s.open("a".into(), session(0), 0).unwrap();
        let mut t = 0;
        while t < 12 * 60 * MIN - 10 * MIN {
            t += 10 * MIN;
            assert!(s.touch("a", t).is_ok(), "at {t}");
        }
        assert_eq!(s.touch("a", 12 * 60 * MIN), Err(SessionError::Expired));
    }

    #[test]
    fn sign_out_ends_only_that_session() {
        let mut s = sessions();
        s.open("a".into(), session(0), 0).unwrap();
        s.open("b".into(), session(0), 0).unwrap();
        assert!(s.close("a"));
        assert!(!s.close("a"));
        assert_eq!(s.touch("a", 1), Err(SessionError::Unknown));
        assert!(s.touch("b", 1).is_ok());
    }

    #[test]
    fn a_token_at_its_limit_loses_its_own_oldest_session_not_anothers() {
        let mut s = Sessions::new(Limits {
            max_per_token: 2,
            ..Limits::default()
        });
        let of = |token: &str, now: u64| Session {
            token_id: token.into(),
            ..session(now)
        };
        s.open("a1".into(), of("a", 0), 0).unwrap();
        s.open("b1".into(), of("b", 1), 1).unwrap();
        s.open("a2".into(), of("a", 2), 2).unwrap();
        s.open("a3".into(), of("a", 3), 3).unwrap();
        assert_eq!(s.touch("a1", 4), Err(SessionError::Unknown), "a's oldest");
        for id in ["b1", "a2", "a3"] {
            assert!(s.touch(id, 4).is_ok(), "{id}");
        }
    }

    #[test]
    fn at_the_console_limit_expired_sessions_go_then_sign_ins_are_refused() {
        let mut s = sessions();
        let of = |token: &str, now: u64| Session {
            token_id: token.into(),
            ..session(now)
        };
        s.open("a".into(), of("a", 0), 0).unwrap();
        s.open("b".into(), of("b", 40 * MIN), 40 * MIN).unwrap();
        s.open("c".into(), of("c", 40 * MIN), 40 * MIN).unwrap();
        // "a" is idle past its 30 minutes: it makes room.
        s.open("d".into(), of("d", 41 * MIN), 41 * MIN).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.open("e".into(), of("e", 42 * MIN), 42 * MIN),
            Err(Full(3))
        );
        for id in ["b", "c", "d"] {
            assert!(s.touch(id, 42 * MIN).is_ok(), "{id} kept");
        }
    }

    #[test]
    fn a_peek_checks_expiry_without_restarting_the_idle_time() {
        let mut s = sessions();
        s.open("a".into(), session(0), 0).unwrap();
        assert!(s.peek("a", 20 * MIN).is_ok());
        assert!(s.peek("a", 29 * MIN).is_ok());
        assert_eq!(s.peek("a", 30 * MIN), Err(SessionError::Expired));
    }

    #[test]
    fn the_language_is_changed_per_session() {
        let mut s = sessions();
        s.open("a".into(), session(0), 0).unwrap();
        s.set_lang("a", Lang::Fa);
        assert_eq!(s.touch("a", 1).unwrap().lang, Lang::Fa);
    }

    #[test]
    fn csrf_tokens_compare_by_content() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }
}
