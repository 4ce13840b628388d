//! Sharding a simulated fleet over processes (pure): one process may hold
//! at most 20,000 open files (the hard limit on the development and CI
//! machines), and every simulated device is one TLS connection, so a large
//! fleet runs as several `fleet-sim shard` child processes of one
//! `fleet-sim run`, each with a contiguous slice of the plan.
//!
//! The children tell the parent how far they are on standard output, one
//! line at a time ([`ChildLine`]); the parent adds the lines up
//! ([`FleetProgress`]) into one progress line for the whole fleet. The I/O
//! around this is in [`crate::supervise`].

use std::ops::Range;

/// Devices per process unless `--max-per-process` says otherwise.
pub const DEFAULT_MAX_PER_PROCESS: usize = 15_000;
/// The most `--max-per-process` accepts: under the 20,000 open files a
/// process may hold, with room for the runtime's own files.
pub const MAX_PER_PROCESS_LIMIT: usize = 19_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("--max-per-process {asked} is over {limit}: a process may hold at most 20,000 open files and every device is one connection")]
    TooManyPerProcess { asked: usize, limit: usize },
    #[error("--max-per-process must be at least 1")]
    ZeroPerProcess,
    #[error("--shards must be at least 1")]
    ZeroShards,
    #[error("{devices} devices over {shards} shards puts {per_shard} in one process, over --max-per-process {max}; use at least {needed} shards")]
    TooFewShards {
        devices: usize,
        shards: usize,
        per_shard: usize,
        max: usize,
        needed: usize,
    },
    #[error("shard index {index} is not below the number of shards {of}")]
    Index { index: usize, of: usize },
}

/// Check `--max-per-process`.
pub fn check_max_per_process(max: usize) -> Result<usize, ShardError> {
    match max {
        0 => Err(ShardError::ZeroPerProcess),
        m if m > MAX_PER_PROCESS_LIMIT => Err(ShardError::TooManyPerProcess {
            asked: m,
            limit: MAX_PER_PROCESS_LIMIT,
        }),
        m => Ok(m),
    }
}

/// The default number of shards: ceil(devices / max), at least one.
pub fn default_shards(devices: usize, max_per_process: usize) -> usize {
    devices.div_ceil(max_per_process.max(1)).max(1)
}

/// The plan's device indices of each shard: contiguous, in order, as even
/// as they can be (sizes differ by one at most), together exactly
/// `0..devices`, none over `max_per_process`.
pub fn slices(
    devices: usize,
    shards: usize,
    max_per_process: usize,
) -> Result<Vec<Range<usize>>, ShardError> {
    let max = check_max_per_process(max_per_process)?;
    if shards == 0 {
        return Err(ShardError::ZeroShards);
    }
    let per_shard = devices.div_ceil(shards);
    if per_shard > max {
        return Err(ShardError::TooFewShards {
            devices,
            shards,
            per_shard,
            max,
            needed: default_shards(devices, max),
        });
    }
    let (base, extra) = (devices / shards, devices % shards);
    let mut out = Vec::with_capacity(shards);
    let mut start = 0;
    for i in 0..shards {
        let len = base + usize::from(i < extra);
        out.push(start..start + len);
        start += len;
    }
    Ok(out)
}

/// The slice of shard `index` of `of`.
pub fn slice(
    devices: usize,
    index: usize,
    of: usize,
    max_per_process: usize,
) -> Result<Range<usize>, ShardError> {
    if index >= of {
        return Err(ShardError::Index { index, of });
    }
    Ok(slices(devices, of, max_per_process)?.swap_remove(index))
}

/// The prefix of every line a child writes for its parent.
const PREFIX: &str = "fleet-sim-shard";

/// What a child tells its parent, one line on standard output each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildLine {
    /// While coming up: agents started so far, and those that sent their
    /// first state.
    Progress { started: usize, reported: usize },
    /// Every device started; `reported` of them sent their state.
    Running { reported: usize },
}

impl ChildLine {
    pub fn format(&self) -> String {
        match self {
            ChildLine::Progress { started, reported } => {
                format!("{PREFIX} progress started={started} reported={reported}")
            }
            ChildLine::Running { reported } => format!("{PREFIX} running reported={reported}"),
        }
    }

    /// `None` for any other line (a child's stray output is not progress).
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.trim().split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let kind = words.next()?;
        let mut field = |name: &str| -> Option<usize> {
            words
                .next()?
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()
        };
        let line = match kind {
            "progress" => ChildLine::Progress {
                started: field("started")?,
                reported: field("reported")?,
            },
            "running" => ChildLine::Running {
                reported: field("reported")?,
            },
            _ => return None,
        };
        words.next().is_none().then_some(line)
    }
}

/// One shard as its parent last heard of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardState {
    pub devices: usize,
    pub started: usize,
    pub reported: usize,
    pub running: bool,
}

/// The whole fleet's progress from its shards' lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetProgress {
    pub shards: Vec<ShardState>,
}

impl FleetProgress {
    pub fn new(slices: &[Range<usize>]) -> Self {
        Self {
            shards: slices
                .iter()
                .map(|r| ShardState {
                    devices: r.len(),
                    ..ShardState::default()
                })
                .collect(),
        }
    }

    /// Take shard `index`'s line into account (an index out of range is
    /// ignored). A running shard has started all its devices.
    pub fn on(&mut self, index: usize, line: ChildLine) {
        let Some(s) = self.shards.get_mut(index) else {
            return;
        };
        match line {
            ChildLine::Progress { started, reported } => {
                s.started = started.min(s.devices);
                s.reported = reported.min(s.devices);
            }
            ChildLine::Running { reported } => {
                s.started = s.devices;
                s.reported = reported.min(s.devices);
                s.running = true;
            }
        }
    }

    pub fn devices(&self) -> usize {
        self.shards.iter().map(|s| s.devices).sum()
    }

    pub fn started(&self) -> usize {
        self.shards.iter().map(|s| s.started).sum()
    }

    pub fn reported(&self) -> usize {
        self.shards.iter().map(|s| s.reported).sum()
    }

    pub fn all_running(&self) -> bool {
        self.shards.iter().all(|s| s.running)
    }

    /// The one progress line for the whole fleet.
    pub fn line(&self) -> String {
        let running = self.shards.iter().filter(|s| s.running).count();
        format!(
            "{} of {} started, {} reported; {running} of {} shards running",
            self.started(),
            self.devices(),
            self.reported(),
            self.shards.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_plan_exactly_once_and_stay_under_the_limit() {
        for devices in [0, 1, 2, 299, 300, 301, 14_999, 15_000, 15_001, 100_000] {
            let shards = default_shards(devices, DEFAULT_MAX_PER_PROCESS);
            for n in [shards, shards + 1, shards + 3] {
                let s = slices(devices, n, DEFAULT_MAX_PER_PROCESS).unwrap();
                assert_eq!(s.len(), n);
                let mut next = 0;
                for r in &s {
                    assert_eq!(r.start, next, "{devices} over {n}: contiguous, in order");
                    assert!(r.len() <= DEFAULT_MAX_PER_PROCESS);
                    next = r.end;
                }
                assert_eq!(next, devices, "every device, once");
                let (lo, hi) = (
                    s.iter().map(|r| r.len()).min().unwrap(),
                    s.iter().map(|r| r.len()).max().unwrap(),
                );
                assert!(hi - lo <= 1, "even: {lo}..{hi}");
            }
        }
        assert_eq!(default_shards(100_000, 15_000), 7);
        assert_eq!(default_shards(15_000, 15_000), 1);
        assert_eq!(default_shards(0, 15_000), 1);
        assert_eq!(
            slices(300, 3, 15_000).unwrap(),
            vec![0..100, 100..200, 200..300]
        );
        assert_eq!(slice(300, 2, 3, 15_000).unwrap(), 200..300);
    }

    #[test]
    fn too_few_shards_or_too_many_per_process_are_refused() {
        assert_eq!(
            slices(40_000, 2, 15_000),
            Err(ShardError::TooFewShards {
                devices: 40_000,
                shards: 2,
                per_shard: 20_000,
                max: 15_000,
                needed: 3
            })
        );
        assert_eq!(
            check_max_per_process(19_001),
            Err(ShardError::TooManyPerProcess {
                asked: 19_001,
                limit: MAX_PER_PROCESS_LIMIT
            })
        );
        assert_eq!(check_max_per_process(19_000), Ok(19_000));
        assert_eq!(slices(10, 0, 100), Err(ShardError::ZeroShards));
        assert_eq!(check_max_per_process(0), Err(ShardError::ZeroPerProcess));
        assert_eq!(
            slice(10, 3, 3, 100),
            Err(ShardError::Index { index: 3, of: 3 })
        );
    }

    #[test]
    fn child_lines_round_trip_and_other_lines_are_not_progress() {
        for l in [
            ChildLine::Progress {
                started: 12,
                reported: 7,
            },
            ChildLine::Running { reported: 300 },
        ] {
            assert_eq!(ChildLine::parse(&l.format()), Some(l));
        }
        assert_eq!(ChildLine::parse("hello"), None);
        assert_eq!(ChildLine::parse("fleet-sim-shard progress started=1"), None);
        assert_eq!(ChildLine::parse("fleet-sim-shard running reported=x"), None);
        assert_eq!(
            ChildLine::parse("fleet-sim-shard running reported=1 more=2"),
            None
        );
        assert_eq!(
            ChildLine::parse("fleet-sim-shard running reported=3\n"),
            Some(ChildLine::Running { reported: 3 })
        );
    }

    #[test]
    fn the_fleet_progress_adds_up_its_shards() {
        let mut p = FleetProgress::new(&slices(300, 3, 15_000).unwrap());
        assert_eq!((p.devices(), p.started(), p.reported()), (300, 0, 0));
        p.on(
            0,
            ChildLine::Progress {
                started: 50,
                reported: 20,
            },
        );
        p.on(
            1,
            ChildLine::Progress {
                started: 100,
                reported: 90,
            },
        );
        // A later line replaces the earlier one of the same shard.
        p.on(
            0,
            ChildLine::Progress {
                started: 60,
                reported: 30,
            },
        );
        assert_eq!((p.started(), p.reported()), (160, 120));
        assert!(!p.all_running());
        p.on(0, ChildLine::Running { reported: 100 });
        p.on(1, ChildLine::Running { reported: 100 });
        // Figures over a shard's size are capped; unknown shards ignored.
        p.on(2, ChildLine::Running { reported: 1_000 });
        p.on(7, ChildLine::Running { reported: 5 });
        assert!(p.all_running());
        assert_eq!((p.started(), p.reported()), (300, 300));
        assert_eq!(
            p.line(),
            "300 of 300 started, 300 reported; 3 of 3 shards running"
        );
    }
}
