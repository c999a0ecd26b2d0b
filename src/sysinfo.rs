//! Facts about this machine and process, read from the OS (Linux `/proc`; on
//! other systems the figures that cannot be read are reported as unknown/0).

use std::fs;

/// The host name.
pub fn hostname() -> String {
    for p in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into())
}

/// Logical CPUs this process may run on.
pub fn logical_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// The CPU model name, or "unknown".
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// OS, kernel release and architecture, e.g. "linux 6.1.0 x86_64".
pub fn os() -> String {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} {} {}",
        std::env::consts::OS,
        release.trim(),
        std::env::consts::ARCH
    )
    .replace("  ", " ")
}

/// Resident set size of this process in bytes (0 if unknown).
pub fn rss_bytes() -> u64 {
    rss_bytes_of("self")
}

/// Resident set size of process `pid` (a number, or "self") in bytes.
pub fn rss_bytes_of(pid: &str) -> u64 {
    // statm: size resident shared ... in pages; Linux pages are 4 KiB on the
    // platforms we run on.
    fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU time of this process, (user, system) in microseconds ((0, 0) if unknown).
pub fn cpu_times_us() -> (u64, u64) {
    cpu_times_us_of("self")
}

/// CPU time of process `pid` (a number, or "self"), as [`cpu_times_us`].
pub fn cpu_times_us_of(pid: &str) -> (u64, u64) {
    // /proc/<pid>/stat fields 14 and 15 (utime, stime) in clock ticks; USER_HZ
    // is 100 on Linux for this interface. The command name (field 2) may hold
    // spaces, so count from the closing parenthesis.
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0, 0);
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return (0, 0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 10_000;
    // After ')' the fields start at 3 (state), so utime (14) is index 11.
    (tick(11), tick(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_something_sensible() {
        assert!(!hostname().is_empty());
        assert!(logical_cores() >= 1);
        assert!(!cpu_model().is_empty());
        if cfg!(target_os = "linux") {
            assert!(rss_bytes() > 0);
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = std::hint::black_box(x ^ i);
            }
            let (u, s) = cpu_times_us();
            assert!(u + s > 0, "{u} {s}");
        }
    }
}
