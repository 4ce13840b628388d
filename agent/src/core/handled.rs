//! The commands this agent has already acted on, kept until they expire:
//! the broker delivers a command at least once (QoS 1), and a re-delivery
//! must not reboot twice or spend an upload token a second time (the
//! second upload's 403 would then read as the command's failure).

use std::collections::HashMap;

/// How many commands are remembered at most. A command lives at most a day
/// (the controller's cap); an operator sending more than this many to one
/// device within that time loses only the oldest memories, which can at
/// worst run a re-delivered old command again.
pub const MAX_REMEMBERED: usize = 256;

/// Command ids with their expiry (controller time, ms).
#[derive(Debug, Default)]
pub struct Handled {
    expires: HashMap<String, u64>,
}

impl Handled {
    /// Whether command `id` (expiring at `expires_at_ms`) is new at
    /// `now_ms` (controller time); a new one is remembered until it
    /// expires. Expired memories are forgotten first; past
    /// [`MAX_REMEMBERED`] the one expiring soonest goes.
    pub fn first_time(&mut self, id: &str, expires_at_ms: u64, now_ms: u64) -> bool {
        self.expires.retain(|_, exp| *exp >= now_ms);
        if self.expires.contains_key(id) {
            return false;
        }
        if self.expires.len() >= MAX_REMEMBERED {
            if let Some(soonest) = self
                .expires
                .iter()
                .min_by_key(|(id, exp)| (**exp, (*id).clone()))
                .map(|(id, _)| id.clone())
            {
                self.expires.remove(&soonest);
            }
        }
        self.expires.insert(id.to_owned(), expires_at_ms);
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.expires.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_new_once_until_it_expires() {
        let mut h = Handled::default();
        assert!(h.first_time("c-1", 100, 10));
        assert!(!h.first_time("c-1", 100, 50), "a re-delivery");
        assert!(!h.first_time("c-1", 100, 100), "at its expiry still known");
        assert!(h.first_time("c-2", 300, 101));
        assert_eq!(h.len(), 1, "c-1 is forgotten once expired");
    }

    #[test]
    fn the_memory_is_bounded_and_drops_the_soonest_to_expire() {
        let mut h = Handled::default();
        for i in 0..MAX_REMEMBERED as u64 {
            assert!(h.first_time(&format!("c-{i}"), 1_000 + i, 0));
        }
        assert!(h.first_time("c-new", 5_000, 0));
        assert_eq!(h.len(), MAX_REMEMBERED);
        assert!(h.first_time("c-0", 1_000, 0), "the soonest was dropped");
        assert!(!h.first_time("c-2", 1_002, 0), "the others are kept");
        assert!(!h.first_time("c-new", 5_000, 0));
    }
}
