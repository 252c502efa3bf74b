//! The `process_*` metrics, named and typed as the Prometheus client libraries write them, so
//! the usual dashboards and alerts (CPU, memory, descriptors against their limit, restarts)
//! work on Herald unchanged. Read from `/proc/self` on each scrape: a few small files, no state.

use std::fmt::Write;

/// What `/proc/self/stat` says about the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time, in clock ticks after boot.
    pub start_ticks: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Resident set size, in pages.
    pub resident_pages: u64,
}

/// Parses `/proc/[pid]/stat` (proc(5)). The command name, field 2, is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Fields 3 (state) onwards: field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time, in seconds since the epoch, from the `btime` line of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Writes the `process_*` metrics; those that cannot be read (no `/proc`) are left out.
pub fn render(o: &mut String) {
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t));
    if let Some(stat) = stat.filter(|_| ticks > 0 && page > 0) {
        let ticks = ticks as f64;
        sample(
            o,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.cpu_ticks as f64 / ticks,
        );
        sample(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (stat.resident_pages * page as u64) as f64,
        );
        sample(
            o,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.virtual_bytes as f64,
        );
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_boot_time(&t));
        if let Some(boot) = boot {
            sample(
                o,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + stat.start_ticks as f64 / ticks,
            );
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The listing includes the descriptor it is read through.
        let open = dir.count().saturating_sub(1);
        sample(
            o,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open as f64,
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
        let max = if limit.rlim_cur == libc::RLIM_INFINITY {
            f64::INFINITY
        } else {
            limit.rlim_cur as f64
        };
        sample(
            o,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
}

fn sample(o: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    super::header(o, name, kind, help);
    if value.is_infinite() {
        let _ = writeln!(o, "{name} +Inf");
    } else {
        let _ = writeln!(o, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_command_name_holding_spaces_and_parens() {
        let text = "4242 (herald (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 25 0 0 20 0 5 0 98765 123456789 3000 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 175,
                start_ticks: 98765,
                virtual_bytes: 123_456_789,
                resident_pages: 3000,
            })
        );
        assert_eq!(parse_stat("4242 (herald) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_boot_time() {
        let text = "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764700000\nprocesses 10\n";
        assert_eq!(parse_boot_time(text), Some(1_764_700_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let mut o = String::new();
        render(&mut o);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            let line = o
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from {o}"));
            let value: f64 = line[name.len() + 1..].parse().unwrap();
            assert!(value > 0.0 || name == "process_cpu_seconds_total", "{line}");
        }
    }
}
