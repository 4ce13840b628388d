//! Event sequence numbers per stream (pure): whether an event is new, a
//! re-delivery, or a late one filling a gap, and which gap a new one opens.
//! A stream is one agent run of one device: (device, boot id). Its first
//! event to arrive sets where it starts (a run continues the numbering of
//! the one before it, which the controller cannot order); after that, an
//! event numbered more than one past the highest seen leaves a gap, and one
//! numbered below the lowest stored moves the start down: the agent's
//! outbox sends update results and check failures before the rest
//! (decision 0013), so a stream that was offline arrives with its boot
//! event after higher numbers.

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

/// What the store knows of a stream: the lowest number stored (`None`: a
/// stream recorded before the lowest was kept; nothing below its highest
/// is taken for new then) and the highest seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub first: Option<u64>,
    pub last: u64,
}

/// What an event's sequence number means for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first of its stream, or past the highest seen; `gap` is what it
    /// skipped (none when it is the next one).
    New { gap: Option<Gap> },
    /// Below the lowest stored: an event of the stream's start that
    /// arrived after later ones. It is stored and becomes the lowest; `gap`
    /// is what lies between it and the old lowest.
    Earlier { gap: Option<Gap> },
    /// At or below the highest seen, inside this recorded gap: an event
    /// that arrived late. It is stored and the gap shrinks.
    Late { gap: Gap },
    /// At or below the highest seen and not missing: a re-delivery. It
    /// changes nothing.
    Duplicate,
}

/// Judge `seq` against what is known of its stream (`None`: a stream not
/// seen before) and the gap containing `seq`, if any.
///
/// Every number ever stored is at or above the stream's lowest, so one
/// below it was never stored: it cannot be a re-delivery, whatever was
/// pruned since.
pub fn judge(stream: Option<Stream>, seq: u64, gap_with_seq: Option<Gap>) -> Seen {
    match stream {
        None => Seen::New { gap: None },
        Some(Stream { last, .. }) if seq > last => Seen::New {
            gap: (seq > last + 1).then_some(Gap {
                from: last + 1,
                to: seq - 1,
            }),
        },
        Some(Stream {
            first: Some(first), ..
        }) if seq < first => Seen::Earlier {
            gap: (seq + 1 < first).then_some(Gap {
                from: seq + 1,
                to: first - 1,
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

    fn stream(first: u64, last: u64) -> Option<Stream> {
        Some(Stream {
            first: Some(first),
            last,
        })
    }

    #[test]
    fn the_first_event_of_a_stream_starts_it_wherever_it_is() {
        assert_eq!(judge(None, 1, None), Seen::New { gap: None });
        assert_eq!(judge(None, 9_000, None), Seen::New { gap: None });
    }

    #[test]
    fn the_next_number_is_new_and_a_jump_leaves_a_gap() {
        assert_eq!(judge(stream(1, 4), 5, None), Seen::New { gap: None });
        assert_eq!(
            judge(stream(1, 4), 8, None),
            Seen::New {
                gap: Some(Gap { from: 5, to: 7 })
            }
        );
    }

    #[test]
    fn a_number_already_passed_is_a_redelivery_unless_it_was_missing() {
        assert_eq!(judge(stream(1, 8), 8, None), Seen::Duplicate);
        assert_eq!(judge(stream(1, 8), 2, None), Seen::Duplicate);
        let gap = Gap { from: 5, to: 7 };
        assert_eq!(judge(stream(1, 8), 6, Some(gap)), Seen::Late { gap });
        // A gap that does not hold it does not make it late.
        assert_eq!(judge(stream(1, 8), 3, Some(gap)), Seen::Duplicate);
    }

    #[test]
    fn a_number_below_the_lowest_stored_is_the_start_arriving_late() {
        // An offline run's update result (seq 12) arrives before its boot
        // event (seq 9): the boot event is new, and 10..=11 are missing
        // until they come.
        assert_eq!(
            judge(stream(12, 12), 9, None),
            Seen::Earlier {
                gap: Some(Gap { from: 10, to: 11 })
            }
        );
        assert_eq!(judge(stream(12, 14), 11, None), Seen::Earlier { gap: None });
        // The lowest itself, and anything between, as before.
        assert_eq!(judge(stream(12, 14), 12, None), Seen::Duplicate);
        // A stream recorded before the lowest was kept: the old rule.
        let old = Some(Stream {
            first: None,
            last: 14,
        });
        assert_eq!(judge(old, 3, None), Seen::Duplicate);
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
