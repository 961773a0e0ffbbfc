//! What `/proc` says of a process (a `tessera server` under a bench or test): its CPU time and
//! its memory.

use std::time::Duration;

/// The process's CPU time so far, user + system, its exited threads included
/// (`/proc/PID/stat`; 10 ms ticks: for phases of many operations).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .parse()
        .unwrap()
}
