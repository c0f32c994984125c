//! What a process costs: CPU time and resident memory, for a bench client itself and for the
//! emulator child the driver watches. No `unsafe`: `/proc` and rustix's safe `clock_gettime`.

use std::path::Path;

/// Kernel clock ticks per second for `/proc/<pid>/stat` (`USER_HZ`). Linux reports these
/// fields in units of 1/100 s on every architecture we run on; reading `sysconf(_SC_CLK_TCK)`
/// would need libc. Only the emulator's CPU is read this way (10 ms resolution is enough for
/// context); clients use [`own_cpu_seconds`].
pub(crate) const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds of this process, all threads (exited ones included), to the
/// nanosecond: `CLOCK_PROCESS_CPUTIME_ID`, as precise as Python's `getrusage` and Node's
/// `process.cpuUsage()`, where `/proc/self/stat` would round to 10 ms.
pub(crate) fn own_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// User plus system CPU seconds of a process, all of its threads, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat"))?;
    parse_stat_cpu(&stat).ok_or_else(|| std::io::Error::other(format!("unexpected stat: {stat}")))
}

/// `utime` and `stime` are fields 14 and 15; the command name (field 2) may contain spaces
/// and parentheses, so fields are counted after its closing `)`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// A `kB` field of `/proc/<pid>/status`: `VmHWM` (peak resident set) or `VmRSS` (now).
pub(crate) fn status_kib(pid: &str, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid).join("status"))?;
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            value.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .ok_or_else(|| std::io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 5 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        let before = own_cpu_seconds();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(own_cpu_seconds() > before, "{x}");
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(status_kib("self", "VmHWM").unwrap() > 0);
        assert!(status_kib("self", "VmRSS").unwrap() > 0);
    }
}
