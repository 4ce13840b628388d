//! Event sequence numbers per stream (pure): whether an event is new, a
//! re-delivery, or a late one filling a gap, and which gap a new one opens.
//! A stream is one agent run of one device: (device, boot id). A run
//! continues the numbering of the runs before it (the agent keeps the last
//! number in its outbox), so a new stream starts past the highest number of
//! the device's other streams; its first arrival need not be its lowest,
//! because the agent's outbox sends the most important records first (an
//! update result before the check failures numbered before it). A new
//! stream's first event therefore leaves a gap down to the device's other
//! streams (down to 1 for a device's first stream), and after that an event
//! numbered more than one past the highest seen leaves a gap. Numbers are device-wide while the outbox file lives,
//! so an event stored in one stream also fills the others' gaps that hold
//! its number (a gap opened by a new stream before an older run's late
//! event arrived).

/// Sequence numbers `from ..= to` that a stream skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

impl Gap {
    pub fn contains(&self, seq: u64) -> bool {
        (self.from..=self.to).contains(&seq)
    }

    /// How many sequence numbers are missing.
    pub fn missing(&self) -> u64 {
        self.to - self.from + 1
    }

    /// What is left of the gap once `seq` (inside it) arrived: none, one
    /// or two gaps.
    pub fn fill(&self, seq: u64) -> Vec<Gap> {
        let mut left = Vec::new();
        if seq > self.from {
            left.push(Gap {
                from: self.from,
                to: seq - 1,
            });
        }
        if seq < self.to {
            left.push(Gap {
                from: seq + 1,
                to: self.to,
            });
        }
        left
    }
}

/// What an event's sequence number means for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first of its stream, or past the highest seen; `gap` is what it
    /// skipped (none when it is the next one).
    New { gap: Option<Gap> },
    /// At or below the highest seen, inside this recorded gap: an event
    /// that arrived late. It is stored and the gap shrinks.
    Late { gap: Gap },
    /// At or below the highest seen and not missing: a re-delivery. It
    /// changes nothing.
    Duplicate,
}

/// Judge `seq` against the stream's highest sequence number so far
/// (`None`: a stream not seen before), the gap containing `seq`, if any, and
/// (for a new stream) `floor`, the highest sequence number of the device's
/// other streams (0 when it has none: a device numbers its events from 1).
pub fn judge(last: Option<u64>, seq: u64, gap_with_seq: Option<Gap>, floor: u64) -> Seen {
    match last {
        None => Seen::New {
            gap: (seq > floor + 1).then(|| Gap {
                from: floor + 1,
                to: seq - 1,
            }),
        },
        Some(last) if seq > last => Seen::New {
            gap: (seq > last + 1).then_some(Gap {
                from: last + 1,
                to: seq - 1,
            }),
        },
        Some(_) => match gap_with_seq.filter(|g| g.contains(seq)) {
            Some(gap) => Seen::Late { gap },
            None => Seen::Duplicate,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_first_stream_starts_at_one_and_what_it_skipped_is_a_gap() {
        assert_eq!(judge(None, 1, None, 0), Seen::New { gap: None });
        // Its update result (2) arrived before its boot event (1).
        assert_eq!(
            judge(None, 2, None, 0),
            Seen::New {
                gap: Some(Gap { from: 1, to: 1 })
            }
        );
        assert_eq!(
            judge(Some(2), 1, Some(Gap { from: 1, to: 1 }), 0),
            Seen::Late {
                gap: Gap { from: 1, to: 1 }
            }
        );
    }

    #[test]
    fn a_new_stream_that_skips_past_the_devices_other_streams_leaves_a_gap() {
        // The run before ended at 1; this run's update result (6) arrives
        // before its check failures (2 ..= 5).
        assert_eq!(
            judge(None, 6, None, 1),
            Seen::New {
                gap: Some(Gap { from: 2, to: 5 })
            }
        );
        assert_eq!(judge(None, 2, None, 1), Seen::New { gap: None });
        // A stream numbered below the others (an outbox started afresh) is
        // no gap.
        assert_eq!(judge(None, 3, None, 500), Seen::New { gap: None });
    }

    #[test]
    fn the_next_number_is_new_and_a_jump_leaves_a_gap() {
        assert_eq!(judge(Some(4), 5, None, 0), Seen::New { gap: None });
        assert_eq!(
            judge(Some(4), 8, None, 0),
            Seen::New {
                gap: Some(Gap { from: 5, to: 7 })
            }
        );
    }

    #[test]
    fn a_number_already_passed_is_a_redelivery_unless_it_was_missing() {
        assert_eq!(judge(Some(8), 8, None, 0), Seen::Duplicate);
        assert_eq!(judge(Some(8), 2, None, 0), Seen::Duplicate);
        let gap = Gap { from: 5, to: 7 };
        assert_eq!(judge(Some(8), 6, Some(gap), 0), Seen::Late { gap });
        // A gap that does not hold it does not make it late.
        assert_eq!(judge(Some(8), 3, Some(gap), 0), Seen::Duplicate);
    }

    #[test]
    fn a_late_event_shrinks_or_splits_its_gap() {
        let gap = Gap { from: 5, to: 7 };
        assert_eq!(gap.missing(), 3);
        assert_eq!(gap.fill(5), [Gap { from: 6, to: 7 }]);
        assert_eq!(gap.fill(7), [Gap { from: 5, to: 6 }]);
        assert_eq!(
            gap.fill(6),
            [Gap { from: 5, to: 5 }, Gap { from: 7, to: 7 }]
        );
        assert!(Gap { from: 5, to: 5 }.fill(5).is_empty());
    }
}
