//! Event sequence numbers per stream (pure): whether an event is new, a
//! re-delivery, or a late one filling a gap, and which gap a new one opens.
//! A stream is one agent run of one device: (device, boot id). It spans the
//! lowest to the highest number seen so far: a run continues the numbering
//! of the one before it, which the controller cannot order, and the agent
//! drains its outbox by priority (update results first), so the first
//! arrival need not be the lowest number. An event past either end of the
//! span extends it, leaving a gap for the numbers it skipped; one inside
//! the span is new only if it fills a recorded gap.

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

/// The lowest and highest sequence numbers a stream has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
}

/// What an event's sequence number means for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first of its stream, or outside the span seen; `span` is the
    /// stream's span with it, `gap` what it skipped (none when adjacent).
    New { span: Span, gap: Option<Gap> },
    /// At or below the highest seen, inside this recorded gap: an event
    /// that arrived late. It is stored and the gap shrinks.
    Late { gap: Gap },
    /// At or below the highest seen and not missing: a re-delivery. It
    /// changes nothing.
    Duplicate,
}

/// Judge `seq` against the stream's span so far (`None`: a stream not seen
/// before) and the recorded gap containing `seq`, if any.
pub fn judge(span: Option<Span>, seq: u64, gap_with_seq: Option<Gap>) -> Seen {
    match span {
        None => Seen::New {
            span: Span {
                first: seq,
                last: seq,
            },
            gap: None,
        },
        Some(s) if seq > s.last => Seen::New {
            span: Span {
                first: s.first,
                last: seq,
            },
            gap: (seq > s.last + 1).then_some(Gap {
                from: s.last + 1,
                to: seq - 1,
            }),
        },
        Some(s) if seq < s.first => Seen::New {
            span: Span {
                first: seq,
                last: s.last,
            },
            gap: (seq + 1 < s.first).then_some(Gap {
                from: seq + 1,
                to: s.first - 1,
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

    fn span(first: u64, last: u64) -> Option<Span> {
        Some(Span { first, last })
    }

    #[test]
    fn the_first_event_of_a_stream_starts_it_wherever_it_is() {
        assert_eq!(
            judge(None, 1, None),
            Seen::New {
                span: span(1, 1).unwrap(),
                gap: None
            }
        );
        assert_eq!(
            judge(None, 9_000, None),
            Seen::New {
                span: span(9_000, 9_000).unwrap(),
                gap: None
            }
        );
    }

    #[test]
    fn the_next_number_is_new_and_a_jump_leaves_a_gap() {
        assert_eq!(
            judge(span(1, 4), 5, None),
            Seen::New {
                span: span(1, 5).unwrap(),
                gap: None
            }
        );
        assert_eq!(
            judge(span(1, 4), 8, None),
            Seen::New {
                span: span(1, 8).unwrap(),
                gap: Some(Gap { from: 5, to: 7 })
            }
        );
    }

    #[test]
    fn a_number_below_the_first_seen_is_new_as_a_priority_drain_sends_them() {
        // Update results (2, 4) first, then the check failure (3), then the
        // boot event (1): none of them is a re-delivery.
        let Seen::New { span: s, gap } = judge(None, 2, None) else {
            panic!()
        };
        assert_eq!(gap, None);
        let Seen::New { span: s, gap } = judge(Some(s), 4, None) else {
            panic!()
        };
        assert_eq!(gap, Some(Gap { from: 3, to: 3 }));
        assert_eq!(
            judge(Some(s), 3, gap),
            Seen::Late {
                gap: Gap { from: 3, to: 3 }
            }
        );
        assert_eq!(
            judge(Some(s), 1, None),
            Seen::New {
                span: span(1, 4).unwrap(),
                gap: None
            }
        );
        // Further below leaves a gap up to the first seen.
        assert_eq!(
            judge(span(10, 12), 6, None),
            Seen::New {
                span: span(6, 12).unwrap(),
                gap: Some(Gap { from: 7, to: 9 })
            }
        );
    }

    #[test]
    fn a_number_already_passed_is_a_redelivery_unless_it_was_missing() {
        assert_eq!(judge(span(1, 8), 8, None), Seen::Duplicate);
        assert_eq!(judge(span(1, 8), 2, None), Seen::Duplicate);
        assert_eq!(judge(span(1, 8), 1, None), Seen::Duplicate);
        let gap = Gap { from: 5, to: 7 };
        assert_eq!(judge(span(1, 8), 6, Some(gap)), Seen::Late { gap });
        // A gap that does not hold it does not make it late.
        assert_eq!(judge(span(1, 8), 3, Some(gap)), Seen::Duplicate);
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
