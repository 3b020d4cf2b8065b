//! Resource statistics, in the JSON shape `runc events --stats` prints.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::fsutil::read_trim;
use crate::{Cgroup, Place, Result};

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub blkio: BlkioStats,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuStats {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// Nanoseconds.
#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Throttling {
    pub periods: u64,
    #[serde(rename = "throttledPeriods")]
    pub throttled_periods: u64,
    #[serde(rename = "throttledTime")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryStats {
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct PidsStats {
    pub current: u64,
    pub limit: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct BlkioStats {
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Serialize)]
pub struct HugetlbStats {
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

/// A number from a cgroup file; "max" and absent files read as 0, which
/// is what the runc format uses for "no limit".
fn num(dir: &Path, file: &str) -> u64 {
    read_trim(&dir.join(file))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat, ...).
fn keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read_trim(&dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

pub fn collect(cg: &Cgroup) -> Result<Stats> {
    let mut s = Stats::default();
    match cg.place("cpuacct").or(cg.place("cpu")) {
        Some(Place::V1(dir)) => {
            s.cpu.usage.total = num(dir, "cpuacct.usage");
            s.cpu.usage.percpu = read_trim(&dir.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // cpuacct.stat counts USER_HZ ticks (100 per second).
            let st = keyed(dir, "cpuacct.stat");
            s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * 10_000_000;
            s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * 10_000_000;
        }
        Some(Place::V2(dir)) => {
            let st = keyed(dir, "cpu.stat");
            let us = |k: &str| st.get(k).copied().unwrap_or(0) * 1000;
            s.cpu.usage.total = us("usage_usec");
            s.cpu.usage.user = us("user_usec");
            s.cpu.usage.kernel = us("system_usec");
            s.cpu.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
            s.cpu.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
            s.cpu.throttling.throttled_time = us("throttled_usec");
        }
        None => {}
    }
    if let Some(Place::V1(dir)) = cg.place("cpu") {
        let st = keyed(dir, "cpu.stat");
        s.cpu.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
        s.cpu.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
        s.cpu.throttling.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
    }
    match cg.place("memory") {
        Some(Place::V1(dir)) => {
            let entry = |prefix: &str| MemoryEntry {
                limit: num(dir, &format!("{prefix}limit_in_bytes")),
                usage: num(dir, &format!("{prefix}usage_in_bytes")),
                max: num(dir, &format!("{prefix}max_usage_in_bytes")),
                failcnt: num(dir, &format!("{prefix}failcnt")),
            };
            s.memory.usage = entry("memory.");
            s.memory.swap = entry("memory.memsw.");
            s.memory.kernel = entry("memory.kmem.");
            s.memory.raw = keyed(dir, "memory.stat");
            s.memory.cache = s
                .memory
                .raw
                .get("total_cache")
                .or(s.memory.raw.get("cache"))
                .copied()
                .unwrap_or(0);
        }
        Some(Place::V2(dir)) => {
            let events = keyed(dir, "memory.events");
            s.memory.usage = MemoryEntry {
                limit: num(dir, "memory.max"),
                usage: num(dir, "memory.current"),
                max: num(dir, "memory.peak"),
                failcnt: events.get("max").copied().unwrap_or(0),
            };
            s.memory.swap = MemoryEntry {
                limit: num(dir, "memory.swap.max"),
                usage: num(dir, "memory.swap.current"),
                max: num(dir, "memory.swap.peak"),
                failcnt: 0,
            };
            s.memory.raw = keyed(dir, "memory.stat");
            s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        }
        None => {}
    }
    if let Some(Place::V1(dir) | Place::V2(dir)) = cg.place("pids") {
        s.pids.current = num(dir, "pids.current");
        s.pids.limit = num(dir, "pids.max");
    }
    match cg.place("blkio").or(cg.place("io")) {
        Some(Place::V1(dir)) => {
            let parse = |file: &str| -> Vec<BlkioEntry> {
                read_trim(&dir.join(file))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        let (maj, min) = f.next()?.split_once(':')?;
                        Some(BlkioEntry {
                            major: maj.parse().ok()?,
                            minor: min.parse().ok()?,
                            op: f.next()?.to_string(),
                            value: f.next()?.parse().ok()?,
                        })
                    })
                    .collect()
            };
            s.blkio.io_service_bytes_recursive = parse("blkio.throttle.io_service_bytes_recursive");
            s.blkio.io_serviced_recursive = parse("blkio.throttle.io_serviced_recursive");
        }
        Some(Place::V2(dir)) => {
            for line in read_trim(&dir.join("io.stat")).unwrap_or_default().lines() {
                let mut f = line.split_whitespace();
                let Some((maj, min)) = f.next().and_then(|d| d.split_once(':')) else {
                    continue;
                };
                let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
                    continue;
                };
                for kv in f {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let Ok(value) = v.parse() else { continue };
                    let (list, op) = match k {
                        "rbytes" => (&mut s.blkio.io_service_bytes_recursive, "Read"),
                        "wbytes" => (&mut s.blkio.io_service_bytes_recursive, "Write"),
                        "rios" => (&mut s.blkio.io_serviced_recursive, "Read"),
                        "wios" => (&mut s.blkio.io_serviced_recursive, "Write"),
                        _ => continue,
                    };
                    list.push(BlkioEntry {
                        major,
                        minor,
                        op: op.into(),
                        value,
                    });
                }
            }
        }
        None => {}
    }
    if let Some(place) = cg.place("hugetlb") {
        let (dir, v2) = match place {
            Place::V1(d) => (d, false),
            Place::V2(d) => (d, true),
        };
        let sizes: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let (size, tail) = n.strip_prefix("hugetlb.")?.split_once('.')?;
                        (tail == if v2 { "max" } else { "limit_in_bytes" })
                            .then(|| size.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        for size in sizes {
            let st = if v2 {
                HugetlbStats {
                    usage: num(dir, &format!("hugetlb.{size}.current")),
                    max: num(dir, &format!("hugetlb.{size}.max")),
                    failcnt: keyed(dir, &format!("hugetlb.{size}.events"))
                        .get("max")
                        .copied()
                        .unwrap_or(0),
                }
            } else {
                HugetlbStats {
                    usage: num(dir, &format!("hugetlb.{size}.usage_in_bytes")),
                    max: num(dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                    failcnt: num(dir, &format!("hugetlb.{size}.failcnt")),
                }
            };
            s.hugetlb.insert(size, st);
        }
    }
    Ok(s)
}
