//! The process's own resource use, read from `/proc/self` (Linux): resident memory and CPU
//! seconds. Elsewhere these read as `None` and the series are left out.

/// Clock ticks per second of `/proc/self/stat`'s CPU times: USER_HZ, which Linux fixes at 100
/// for user space on every architecture it supports.
const USER_HZ: f64 = 100.0;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    /// When the process started, in seconds since the Unix epoch (the dashboard's uptime).
    pub start_time_seconds: Option<f64>,
}

pub fn read() -> ProcessStats {
    ProcessStats {
        resident_bytes: std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| resident_from_status(&s)),
        cpu_seconds: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_from_stat(&s)),
        start_time_seconds: start_time(),
    }
}

/// The process's start: boot time (`btime` in `/proc/stat`) plus the start tick (field 22 of
/// `/proc/self/stat`), as Prometheus's own process collector computes it.
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    Some(boot_time(&boot)? + start_ticks(&stat)? / USER_HZ)
}

/// `btime 1700000000` → seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<f64> {
    let line = proc_stat.lines().find(|l| l.starts_with("btime "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Field 22 (`starttime`, clock ticks after boot), counted after the command's last `)`.
fn start_ticks(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `VmRSS:   12345 kB` → bytes.
fn resident_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn cpu_from_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let status = "Name:\tr1serve\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads:\t4\n";
        assert_eq!(resident_from_status(status), Some(2 * 1024 * 1024));
        let stat =
            "4242 (r1 (serve) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 4 0 1234";
        assert_eq!(start_ticks(stat), Some(1234.0));
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
        assert_eq!(cpu_from_stat(stat), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let p = read();
            assert!(p.resident_bytes.unwrap() > 1 << 20, "{p:?}");
            assert!(p.cpu_seconds.unwrap() >= 0.0);
            // Started within the last day, and not in the future.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let age = now - p.start_time_seconds.unwrap();
            assert!((-1.0..86_400.0).contains(&age), "{p:?} now {now}");
        }
    }
}
