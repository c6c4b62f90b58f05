//! The process's own families, named as Prometheus' client libraries name them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`), read from `/proc` at
//! scrape time. Where `/proc` cannot be read (not Linux), none is reported.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::counter_name;
use crate::metrics::{
    PROCESS_CPU, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT, PROCESS_START,
    PROCESS_VIRTUAL,
};

/// The process's figures, read now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Figures {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: u64,
    start_seconds: f64,
}

impl Figures {
    /// Reads this process's figures from `/proc`, if it can.
    fn read() -> Option<Figures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        parse(&stat, &boot, ticks, page).map(|f| Figures {
            open_fds,
            max_fds,
            ..f
        })
    }
}

/// The figures in `/proc/self/stat` and `/proc/stat`'s `btime`, with clock ticks per second
/// and the page size (descriptor counts left at 0).
fn parse(stat: &str, boot: &str, ticks: f64, page: u64) -> Option<Figures> {
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field numbers of proc(5), less the two before the fields here (pid, comm).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let boot_seconds: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Figures {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
        open_fds: 0,
        max_fds: 0,
        start_seconds: boot_seconds as f64 + field(22)? as f64 / ticks,
    })
}

/// Encodes the process families, if `/proc` could be read.
pub fn encode(encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let Some(f) = Figures::read() else {
        return Ok(());
    };
    let mut sample = encoder.encode_descriptor(
        counter_name(PROCESS_CPU),
        "Total user and system CPU time spent in seconds.",
        None,
        MetricType::Counter,
    )?;
    sample.encode_counter::<prometheus_client::encoding::NoLabelSet, f64, u64>(
        &f.cpu_seconds,
        None,
    )?;
    let gauges = [
        (
            PROCESS_RESIDENT,
            "Resident memory size in bytes.",
            f.resident_bytes as f64,
        ),
        (
            PROCESS_VIRTUAL,
            "Virtual memory size in bytes.",
            f.virtual_bytes as f64,
        ),
        (
            PROCESS_OPEN_FDS,
            "Number of open file descriptors.",
            f.open_fds as f64,
        ),
        (
            PROCESS_MAX_FDS,
            "Maximum number of open file descriptors.",
            f.max_fds as f64,
        ),
        (
            PROCESS_START,
            "Start time of the process since unix epoch in seconds.",
            f.start_seconds,
        ),
    ];
    for (name, help, v) in gauges {
        encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_after_a_command_name_with_spaces() {
        // pid (comm) state ppid ... as proc(5) numbers them: utime 14, stime 15,
        // starttime 22, vsize 23, rss 24.
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[14 - 3] = "250".into();
        fields[15 - 3] = "50".into();
        fields[22 - 3] = "1000".into();
        fields[23 - 3] = "123456789".into();
        fields[24 - 3] = "10".into();
        let stat = format!("42 (tier lb) {}", fields.join(" "));
        let boot = "cpu 1 2 3\nbtime 1700000000\nprocesses 9\n";
        let f = parse(&stat, boot, 100.0, 4096).expect("parsed");
        assert_eq!(f.cpu_seconds, 3.0);
        assert_eq!(f.resident_bytes, 40960);
        assert_eq!(f.virtual_bytes, 123_456_789);
        assert_eq!(f.start_seconds, 1_700_000_010.0);
    }

    #[test]
    fn this_process_is_read() {
        let f = Figures::read().expect("/proc is readable on Linux");
        assert!(f.open_fds > 0 && f.max_fds >= f.open_fds);
        assert!(f.resident_bytes > 0 && f.virtual_bytes >= f.resident_bytes);
    }
}
