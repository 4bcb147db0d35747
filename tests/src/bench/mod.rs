//! berth's benchmark suite: each part measures one figure of DESIGN.md's performance budget against the
//! real thing (the wasm plugins `berth` embeds, the `berth` binary, the Docker engine), and where a ratio
//! says more than an absolute time, measures both sides in one run.
//!
//! `cargo bench -p berth-tests --bench suite` runs every part and prints the results table; see
//! `BENCHMARKS.md` for the latest figures.

pub mod allocation;
pub mod docker;
pub mod ha;
pub mod hotswap;
pub mod placement;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as berth timestamps its statuses.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The `q` quantile (0..=1) of `samples`, nearest rank. Sorts `samples`.
pub fn quantile<T: Copy + PartialOrd>(samples: &mut [T], q: f64) -> T {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_by(|a, b| a.partial_cmp(b).expect("comparable samples"));
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// The median of `samples` (the upper one of an even count). Sorts `samples`.
pub fn median<T: Copy + PartialOrd>(samples: &mut [T]) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("comparable samples"));
    samples[samples.len() / 2]
}

/// Milliseconds as a float, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A process's resident memory now and at its peak, in MiB (`VmRSS`, `VmHWM` of `/proc/<pid>/status`).
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let field = |name: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
        let kib: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB");
        kib / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) each thread of a process has used so far, summed by thread name (the
/// `comm` of `/proc/<pid>/task/<tid>/stat`; threads of one pool share a name). Read twice, the difference
/// says what a workload cost each part of the process, a figure much steadier from run to run than the
/// workload's wall-clock time on a shared machine.
pub fn thread_cpu(pid: u32) -> BTreeMap<String, Duration> {
    let mut by_name = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/task: {e}"));
    for task in tasks.flatten() {
        // A thread may end between the listing and the read: it no longer counts.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        if let Some((name, cpu)) = parse_thread_stat(&stat) {
            *by_name.entry(name).or_default() += cpu;
        }
    }
    by_name
}

/// A thread's name and CPU time from its `stat` line: `tid (comm) state ...`, where `utime` and `stime`
/// are the 14th and 15th fields, in clock ticks of 1/100 s (`USER_HZ`, fixed at 100 for userspace).
fn parse_thread_stat(stat: &str) -> Option<(String, Duration)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    // `rest` starts at the state, the 3rd field.
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, Duration::from_millis((utime + stime) * 10)))
}

/// Parses Marathon's timestamps (`2026-11-21T10:15:00.123Z`) to milliseconds since the Unix epoch.
pub fn parse_iso_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| text.get(from..to)?.parse::<i64>().ok();
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, milli) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    // Days from civil (Howard Hinnant's algorithm), the inverse of the framework's formatting.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(secs * 1000 + milli).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_frameworks_timestamps() {
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_iso_ms("2000-02-29T00:00:00.000Z"), Some(951_782_400_000));
        assert_eq!(parse_iso_ms("2026-11-21T09:56:40.123Z"), Some(1_795_255_000_123));
        assert_eq!(parse_iso_ms("2026-11-21 09:56:40"), None);
    }

    #[test]
    fn a_threads_cpu_time_is_read_from_its_stat_line() {
        // A name with a space and a parenthesis, as `comm` may hold.
        let stat = "4242 (berth (x) 1) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 37 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_thread_stat(stat), Some(("berth (x) 1".into(), Duration::from_millis(2870))));
        assert_eq!(parse_thread_stat("4242 (short) S 1"), None);
        let own = thread_cpu(std::process::id());
        assert!(!own.is_empty(), "this process has threads");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut v, 0.5), 50);
        assert_eq!(quantile(&mut v, 0.99), 99);
        assert_eq!(quantile(&mut v, 1.0), 100);
        assert_eq!(median(&mut [3, 1, 2]), 2);
    }
}
