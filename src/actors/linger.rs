//! When a commit waits for company: the storage actor's rule for holding a commit open so that
//! more writes share its fsync.
//!
//! A commit costs about the same whatever it carries (BENCHMARKS.md, "what a commit costs"):
//! some 90 µs of system time for its two device flushes, plus a wakeup of the storage thread
//! and of every acceptor waiting on it. Waiting for more writes trades the latency of the
//! writes already pending for that CPU. The trade pays only when two things hold at once:
//!
//! - **the CPU is contended**: on an idle machine the CPU saved buys nothing, and the writes
//!   waited for nothing;
//! - **most of what contends for it does not wait on this commit**: when every busy client is
//!   a writer (puts at 16 clients keep this machine 80 % busy), a commit that waits slows all of
//!   them and the load falls with it. When most of the node's work is answering reads (the
//!   mixed 90/10 row), the reads take the CPU the commits give back.
//!
//! The two signals, sampled by the storage thread itself at a commit once [`WINDOW`] has
//! passed since the last sample (after an idle spell, the window spans it: its mostly idle
//! CPU turns the rule off until the next sample, 50 ms of commits later):
//!
//! - the machine's busy share, from `/proc/stat` (every CPU, not this process: the
//!   processes this node competes with are what matters), with hysteresis: on from
//!   [`BUSY_ON`], off below [`BUSY_OFF`]. Where `/proc/stat` cannot be read, the machine
//!   counts as idle and no commit lingers for this reason;
//! - the node's acceptor answers that wrote nothing (reads, quick-read queries, refusals)
//!   against the records it wrote, in the same window: at least [`READS_PER_WRITE`] to one.
//!
//! Both on: a commit lingers once before it runs, `storage.commit_wait_among_reads_us`
//! (`config::DEFAULT_COMMIT_WAIT_US`, 1 ms, by default; 0 turns the rule off). This is a liveness
//! and cost rule only; safety does not depend on it: every write is still answered only after
//! its commit returns, whatever the rule decides and however wrong its signals are (a stale
//! sample, a clock that jumps, a `/proc/stat` that lies). The worst a wrong signal does is
//! delay writes by that wait, or commit them alone.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::actors::Stats;

/// How often the signals are sampled.
pub const WINDOW: Duration = Duration::from_millis(50);
/// The machine counts as busy from this share of its CPU time in use, and until it falls
/// below [`BUSY_OFF`].
pub const BUSY_ON: f64 = 0.85;
pub const BUSY_OFF: f64 = 0.60;
/// Acceptor answers that wrote nothing, per record written, from which a node's work counts
/// as mostly not waiting on commits.
pub const READS_PER_WRITE: u64 = 2;

/// The busy state after a window with `busy_share` of the CPU in use (`None`: unknown, which
/// counts as idle).
pub fn busy_after(was_busy: bool, busy_share: Option<f64>) -> bool {
    match busy_share {
        None => false,
        Some(share) if was_busy => share >= BUSY_OFF,
        Some(share) => share >= BUSY_ON,
    }
}

/// Whether commits should linger, given the window's answers without a write, records
/// written, and the busy state. A window that wrote nothing says nothing about writes: no.
pub fn lingers(answers_without_write: u64, records_written: u64, busy: bool) -> bool {
    busy && records_written > 0
        && answers_without_write >= READS_PER_WRITE.saturating_mul(records_written)
}

/// CPU time counters of the whole machine: (busy, total) in clock ticks.
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

/// Parses `/proc/stat`'s first line (`cpu user nice system idle iowait irq softirq steal
/// guest guest_nice`) into (busy, total) ticks over the first eight fields (guest time is
/// already counted in user and nice); idle and iowait are not busy.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if ticks.len() < 4 {
        return None;
    }
    let total: u64 = ticks.iter().sum();
    let idle = ticks[3] + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The rule's state, kept by the storage actor.
pub struct LingerSignal {
    window_start: Instant,
    answers_at: u64,
    written_at: u64,
    cpu_at: Option<(u64, u64)>,
    busy: bool,
    on: bool,
}

impl LingerSignal {
    pub fn new(stats: &Stats) -> LingerSignal {
        LingerSignal {
            window_start: Instant::now(),
            answers_at: Stats::get(&stats.answers_without_write),
            written_at: Stats::get(&stats.records_written),
            cpu_at: machine_cpu(),
            busy: false,
            on: false,
        }
    }

    /// Tests: a signal that stays `on` (it is never sampled).
    #[cfg(test)]
    pub fn forced(on: bool) -> LingerSignal {
        LingerSignal {
            window_start: Instant::now() + Duration::from_secs(3_600),
            answers_at: 0,
            written_at: 0,
            cpu_at: None,
            busy: on,
            on,
        }
    }

    /// Whether a commit should linger now; samples the signals once a window has passed.
    pub fn on(&mut self, stats: &Stats) -> bool {
        if self.window_start.elapsed() >= WINDOW {
            self.sample(stats);
        }
        self.on
    }

    fn sample(&mut self, stats: &Stats) {
        let delta = |counter: &AtomicU64, at: &mut u64| {
            let now = Stats::get(counter);
            let d = now.saturating_sub(*at);
            *at = now;
            d
        };
        let answers = delta(&stats.answers_without_write, &mut self.answers_at);
        let written = delta(&stats.records_written, &mut self.written_at);
        let cpu = machine_cpu();
        let share = match (self.cpu_at, cpu) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some(busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64)
            }
            _ => None,
        };
        self.cpu_at = cpu;
        self.busy = busy_after(self.busy, share);
        self.on = lingers(answers, written, self.busy);
        self.window_start = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_busy_from_the_high_mark_until_below_the_low_one() {
        assert!(!busy_after(false, Some(0.84)));
        assert!(busy_after(false, Some(0.85)));
        assert!(
            busy_after(true, Some(0.70)),
            "hysteresis: stays busy above the low mark"
        );
        assert!(busy_after(true, Some(0.60)), "at the low mark: still busy");
        assert!(!busy_after(true, Some(0.59)));
        assert!(!busy_after(true, None), "an unknown share counts as idle");
    }

    #[test]
    fn commits_linger_only_on_a_busy_machine_whose_work_is_mostly_reads() {
        // The mixed 90/10 row: about five answers without a write per record, machine busy.
        assert!(lingers(500, 100, true));
        assert!(lingers(200, 100, true), "at the ratio");
        // Writers alone, however busy: lingering would only slow them.
        assert!(!lingers(0, 100, true));
        assert!(!lingers(199, 100, true));
        // An idle machine: nothing to gain.
        assert!(!lingers(500, 100, false));
        // No writes in the window: no evidence either way.
        assert!(!lingers(500, 0, true));
    }

    #[test]
    fn the_cpu_line_is_parsed_into_busy_and_total_ticks() {
        let line = "cpu  100 5 50 800 40 3 2 0 0 0";
        assert_eq!(parse_cpu_line(line), Some((160, 1000)));
        // Guest time (the last two fields) is part of user and nice already.
        let line = "cpu  100 5 50 800 40 3 2 0 60 5";
        assert_eq!(parse_cpu_line(line), Some((160, 1000)));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4"), None, "a per-CPU line");
        assert_eq!(parse_cpu_line("cpu 1 2 x 4"), None);
        assert_eq!(parse_cpu_line("cpu 1 2"), None);
    }
}
