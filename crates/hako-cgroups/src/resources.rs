//! `linux.resources` to cgroupfs writes, per controller, for whichever of
//! v1 and v2 holds that controller.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNetwork, LinuxPids, LinuxRdma,
    LinuxResources,
};

use crate::fsutil::{read_trim, write_file};
use crate::{Cgroup, Error, Place, Result, devices};

pub fn apply(cg: &Cgroup, res: &LinuxResources) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if let Some(m) = res.memory() {
        memory(cg, m, &mut warnings)?;
    }
    if let Some(c) = res.cpu() {
        cpu(cg, c)?;
        cpuset(cg, c)?;
    }
    if let Some(p) = res.pids() {
        pids(cg, p)?;
    }
    if let Some(b) = res.block_io() {
        blkio(cg, b)?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        hugetlb(cg, i, h)?;
    }
    if let Some(n) = res.network() {
        network(cg, n)?;
    }
    if let Some(r) = res.rdma() {
        rdma(cg, r)?;
    }
    if let Some(u) = res.unified() {
        unified(cg, u)?;
    }
    if let Some(d) = res.devices() {
        devices::apply(cg, d)?;
    }
    Ok(warnings)
}

fn need<'a>(cg: &'a Cgroup, controller: &str, field: &str) -> Result<Place<'a>> {
    if let Some(p) = cg.place(controller) {
        return Ok(p);
    }
    // Offered by cgroup2 but not yet enabled down to this cgroup (on a
    // hybrid host, where only what is needed gets enabled).
    if cg.enable_v2_controller(controller)
        && let Some(p) = cg.place(controller)
    {
        return Ok(p);
    }
    let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    Err(Error::Resource {
        field: field.to_string(),
        message: unavailable(controller, &proc_cgroups),
    })
}

/// Why a controller cannot be used, from the kernel's /proc/cgroups. A
/// controller bound to a v1 hierarchy that is no longer mounted anywhere
/// is lost to both trees (the kernel keeps such a hierarchy alive after
/// its last unmount), and mounting it again is the fix.
pub(crate) fn unavailable(controller: &str, proc_cgroups: &str) -> String {
    let hierarchy = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&controller))
        .and_then(|f| Some((f.get(1)?.parse::<u32>().ok()?, *f.get(3)? == "1")));
    match hierarchy {
        None => format!("the {controller} controller is not available here: this kernel has none"),
        Some((_, false)) => format!(
            "the {controller} controller is not available here: it is disabled (cgroup_disable= on the kernel command line)"
        ),
        Some((0, true)) => format!(
            "the {controller} controller is not available here: the cgroup v2 tree does not offer it"
        ),
        Some((id, true)) => format!(
            "the {controller} controller is not available here: it is bound to cgroup v1 hierarchy {id}, which is mounted nowhere; mount it (mkdir -p /sys/fs/cgroup/{controller} && mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}) or drop this field"
        ),
    }
}

/// Turns a failed write into an error that names the config field and
/// says what the errno means for a cgroup file.
fn field_error(field: &str, e: Error) -> Error {
    match e {
        Error::Write {
            path,
            value,
            source,
        } => {
            let hint = match source.raw_os_error() {
                Some(libc::ENOENT) => " (this kernel has no such setting here)",
                Some(libc::EINVAL) => " (the kernel refused this value)",
                Some(libc::EBUSY) => " (the cgroup uses more than that now)",
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    " (this cgroup is not writable for this user)"
                }
                Some(libc::ERANGE) => " (out of range)",
                _ => "",
            };
            Error::Resource {
                field: field.to_string(),
                message: format!("write {value:?} to {}: {source}{hint}", path.display()),
            }
        }
        Error::Io { path, source } => Error::Resource {
            field: field.to_string(),
            message: format!("{}: {source}", path.display()),
        },
        other => other,
    }
}

fn set(field: &str, dir: &Path, file: &str, value: impl Display) -> Result<()> {
    write_file(&dir.join(file), &value.to_string()).map_err(|e| field_error(field, e))
}

fn bad(field: &str, message: impl Into<String>) -> Error {
    Error::Resource {
        field: field.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------- memory

fn memory(cg: &Cgroup, m: &LinuxMemory, warnings: &mut Vec<String>) -> Result<()> {
    let limit = m.limit().filter(|v| *v != 0);
    let mut swap = m.swap().filter(|v| *v != 0);
    // Unlimited memory with no word on swap means unlimited swap too.
    if limit == Some(-1) && swap.is_none() {
        swap = Some(-1);
    }
    let touches = limit.is_some()
        || swap.is_some()
        || m.reservation().is_some()
        || m.kernel().is_some()
        || m.kernel_tcp().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some()
        || m.use_hierarchy().is_some();
    if !touches {
        return Ok(());
    }
    if m.kernel().is_some_and(|k| k != 0) {
        warnings.push("linux.resources.memory.kernel: kernel memory limits are not supported by Linux any more; ignored".into());
    }
    match need(cg, "memory", "memory")? {
        Place::V1(dir) => memory_v1(dir, m, limit, swap),
        Place::V2(dir) => memory_v2(dir, m, limit, swap),
    }
}

fn memory_v1(dir: &Path, m: &LinuxMemory, limit: Option<i64>, swap: Option<i64>) -> Result<()> {
    if m.check_before_update() == Some(true)
        && let Some(l) = limit.filter(|l| *l > 0)
    {
        let usage: i64 = read_trim(&dir.join("memory.usage_in_bytes"))?
            .parse()
            .unwrap_or(0);
        if usage > l {
            return Err(bad(
                "memory.limit",
                format!("{l} is below the {usage} bytes the container uses now"),
            ));
        }
    }
    let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    let set_limit = |l: i64| set("memory.limit", dir, "memory.limit_in_bytes", l);
    let set_swap = |s: i64| {
        if has_memsw {
            set("memory.swap", dir, "memory.memsw.limit_in_bytes", s)
        } else if s == -1 {
            Ok(())
        } else {
            Err(bad(
                "memory.swap",
                "swap accounting is off on this host (no memory.memsw.limit_in_bytes): boot with swapaccount=1 or leave swap unset",
            ))
        }
    };
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // The kernel wants limit <= memsw at every moment: raise memsw
            // first when growing, lower the limit first when shrinking.
            let current_memsw: i64 = if has_memsw {
                read_trim(&dir.join("memory.memsw.limit_in_bytes"))?
                    .parse()
                    .unwrap_or(i64::MAX)
            } else {
                i64::MAX
            };
            if s == -1 || current_memsw < s || l == -1 {
                set_swap(s)?;
                set_limit(l)?;
            } else {
                set_limit(l)?;
                set_swap(s)?;
            }
        }
        (Some(l), None) => set_limit(l)?,
        (None, Some(s)) => set_swap(s)?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation() {
        set("memory.reservation", dir, "memory.soft_limit_in_bytes", r)?;
    }
    if let Some(t) = m.kernel_tcp() {
        set("memory.kernelTCP", dir, "memory.kmem.tcp.limit_in_bytes", t)?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(bad(
                "memory.swappiness",
                format!("{s} is not between 0 and 100"),
            ));
        }
        set("memory.swappiness", dir, "memory.swappiness", s)?;
    }
    if let Some(d) = m.disable_oom_killer() {
        set(
            "memory.disableOOMKiller",
            dir,
            "memory.oom_control",
            u8::from(d),
        )?;
    }
    if let Some(h) = m.use_hierarchy() {
        // Always on in current kernels, which refuse to turn it off.
        let now = read_trim(&dir.join("memory.use_hierarchy")).unwrap_or_default();
        if now != u8::from(h).to_string() {
            set(
                "memory.useHierarchy",
                dir,
                "memory.use_hierarchy",
                u8::from(h),
            )?;
        }
    }
    Ok(())
}

fn memory_v2(dir: &Path, m: &LinuxMemory, limit: Option<i64>, swap: Option<i64>) -> Result<()> {
    let max = |v: i64| {
        if v < 0 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    if m.check_before_update() == Some(true)
        && let Some(l) = limit.filter(|l| *l > 0)
    {
        let usage: i64 = read_trim(&dir.join("memory.current"))?.parse().unwrap_or(0);
        if usage > l {
            return Err(bad(
                "memory.limit",
                format!("{l} is below the {usage} bytes the container uses now"),
            ));
        }
    }
    // The spec's swap is memory plus swap; cgroup2 limits swap alone.
    let swap_only = match (swap, limit) {
        (None, _) => None,
        (Some(-1), _) => Some(-1),
        (Some(s), Some(l)) if l > 0 => {
            if s < l {
                return Err(bad(
                    "memory.swap",
                    format!(
                        "{s} is below memory.limit {l}: swap counts memory plus swap, so it must be at least the limit (or -1)"
                    ),
                ));
            }
            Some(s - l)
        }
        (Some(_), _) => {
            return Err(bad(
                "memory.swap",
                "a swap limit needs a memory limit on cgroup v2",
            ));
        }
    };
    if let Some(s) = swap_only {
        if dir.join("memory.swap.max").exists() {
            set("memory.swap", dir, "memory.swap.max", max(s))?;
        } else if s != -1 {
            return Err(bad(
                "memory.swap",
                "this kernel has no swap accounting (no memory.swap.max)",
            ));
        }
    }
    if let Some(l) = limit {
        set("memory.limit", dir, "memory.max", max(l))?;
    }
    if let Some(r) = m.reservation() {
        set("memory.reservation", dir, "memory.low", max(r))?;
    }
    if m.swappiness().is_some() {
        return Err(bad(
            "memory.swappiness",
            "cgroup v2 has no per-cgroup swappiness: remove the setting",
        ));
    }
    if m.disable_oom_killer() == Some(true) {
        return Err(bad(
            "memory.disableOOMKiller",
            "cgroup v2 cannot disable the OOM killer: remove the setting",
        ));
    }
    if m.kernel_tcp().is_some_and(|t| t != 0) {
        return Err(bad(
            "memory.kernelTCP",
            "cgroup v2 has no separate TCP memory limit: remove the setting",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- cpu

/// cpu.shares (2..262144) to cpu.weight (1..10000), the mapping every
/// runtime uses.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

fn cpu(cg: &Cgroup, c: &LinuxCpu) -> Result<()> {
    let shares = c.shares().filter(|s| *s != 0);
    let quota = c.quota().filter(|q| *q != 0);
    let period = c.period().filter(|p| *p != 0);
    let rt = c.realtime_runtime().filter(|r| *r != 0);
    let rt_period = c.realtime_period().filter(|p| *p != 0);
    if shares.is_none()
        && quota.is_none()
        && period.is_none()
        && c.burst().is_none()
        && rt.is_none()
        && rt_period.is_none()
        && c.idle().is_none()
    {
        return Ok(());
    }
    if let Some(s) = shares
        && !(2..=262_144).contains(&s)
    {
        return Err(bad("cpu.shares", format!("{s} is outside 2 to 262144")));
    }
    if let Some(q) = quota
        && q < -1
    {
        return Err(bad(
            "cpu.quota",
            format!("{q} is no quota: give microseconds per period, or -1 for none"),
        ));
    }
    match need(cg, "cpu", "cpu")? {
        Place::V1(dir) => {
            if let Some(s) = shares {
                set("cpu.shares", dir, "cpu.shares", s)?;
            }
            if let Some(p) = period
                && let Err(e) = set("cpu.period", dir, "cpu.cfs_period_us", p)
            {
                // A new period can clash with the current quota; set
                // the quota first and retry.
                let Some(q) = quota else { return Err(e) };
                set("cpu.quota", dir, "cpu.cfs_quota_us", q)?;
                set("cpu.period", dir, "cpu.cfs_period_us", p)?;
            }
            if let Some(q) = quota {
                set("cpu.quota", dir, "cpu.cfs_quota_us", q)?;
            }
            if let Some(b) = c.burst() {
                set("cpu.burst", dir, "cpu.cfs_burst_us", b)?;
            }
            if let Some(p) = rt_period {
                set("cpu.realtimePeriod", dir, "cpu.rt_period_us", p)?;
            }
            if let Some(r) = rt {
                set("cpu.realtimeRuntime", dir, "cpu.rt_runtime_us", r)?;
            }
            if let Some(i) = c.idle() {
                set("cpu.idle", dir, "cpu.idle", i)?;
            }
        }
        Place::V2(dir) => {
            if rt.is_some() || rt_period.is_some() {
                return Err(bad(
                    "cpu.realtimeRuntime",
                    "realtime limits need cgroup v1's cpu controller; cgroup v2 has none",
                ));
            }
            if let Some(s) = shares {
                set("cpu.shares", dir, "cpu.weight", shares_to_weight(s))?;
            }
            if quota.is_some() || period.is_some() {
                let current =
                    read_trim(&dir.join("cpu.max")).unwrap_or_else(|_| "max 100000".into());
                let mut cur = current.split_whitespace();
                let cur_quota = cur.next().unwrap_or("max").to_string();
                let cur_period = cur.next().unwrap_or("100000").to_string();
                let q = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    Some(_) => "max".to_string(),
                    None => cur_quota,
                };
                let p = period.map_or(cur_period, |p| p.to_string());
                set("cpu.quota", dir, "cpu.max", format!("{q} {p}"))?;
            }
            if let Some(b) = c.burst() {
                set("cpu.burst", dir, "cpu.max.burst", b)?;
            }
            if let Some(i) = c.idle() {
                set("cpu.idle", dir, "cpu.idle", i)?;
            }
        }
    }
    Ok(())
}

fn cpuset(cg: &Cgroup, c: &LinuxCpu) -> Result<()> {
    let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = c.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_none() && mems.is_none() {
        return Ok(());
    }
    let (Place::V1(dir) | Place::V2(dir)) = need(cg, "cpuset", "cpu.cpus")?;
    if let Some(v) = cpus {
        set("cpu.cpus", dir, "cpuset.cpus", v)?;
    }
    if let Some(v) = mems {
        set("cpu.mems", dir, "cpuset.mems", v)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- pids

fn pids(cg: &Cgroup, p: &LinuxPids) -> Result<()> {
    let limit = p.limit();
    if limit == 0 {
        return Ok(());
    }
    let (Place::V1(dir) | Place::V2(dir)) = need(cg, "pids", "pids.limit")?;
    let value = if limit < 0 {
        "max".to_string()
    } else {
        limit.to_string()
    };
    set("pids.limit", dir, "pids.max", value)
}

// ---------------------------------------------------------------- block io

/// blkio weight (10..1000) to io.weight (1..10000).
fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990
}

fn blkio(cg: &Cgroup, b: &LinuxBlockIo) -> Result<()> {
    let throttles = [
        (
            "blockIO.throttleReadBpsDevice",
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "rbps",
        ),
        (
            "blockIO.throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "wbps",
        ),
        (
            "blockIO.throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
        ),
        (
            "blockIO.throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
        ),
    ];
    let any = b.weight().is_some()
        || b.leaf_weight().is_some()
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || throttles
            .iter()
            .any(|(_, t, _, _)| t.as_ref().is_some_and(|v| !v.is_empty()));
    if !any {
        return Ok(());
    }
    match need(
        cg,
        if cg.place("blkio").is_some() {
            "blkio"
        } else {
            "io"
        },
        "blockIO",
    )? {
        Place::V1(dir) => {
            let weight_file = ["blkio.weight", "blkio.bfq.weight"]
                .into_iter()
                .find(|f| dir.join(f).exists());
            if let Some(w) = b.weight() {
                let f = weight_file.ok_or_else(|| bad("blockIO.weight", "no blkio.weight here: proportional weights need the BFQ I/O scheduler on the disk"))?;
                set("blockIO.weight", dir, f, w)?;
            }
            if let Some(w) = b.leaf_weight() {
                set("blockIO.leafWeight", dir, "blkio.leaf_weight", w)?;
            }
            for (i, d) in b.weight_device().iter().flatten().enumerate() {
                let field = format!("blockIO.weightDevice[{i}]");
                let f = weight_file.map(|f| format!("{f}_device")).ok_or_else(|| bad(&field, "no blkio weight_device here: per-device weights need the BFQ I/O scheduler"))?;
                if let Some(w) = d.weight() {
                    set(&field, dir, &f, format!("{}:{} {w}", d.major(), d.minor()))?;
                }
                if let Some(w) = d.leaf_weight() {
                    set(
                        &field,
                        dir,
                        "blkio.leaf_weight_device",
                        format!("{}:{} {w}", d.major(), d.minor()),
                    )?;
                }
            }
            for (field, list, file, _) in throttles {
                for (i, t) in list.iter().flatten().enumerate() {
                    set(
                        &format!("{field}[{i}]"),
                        dir,
                        file,
                        format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                    )?;
                }
            }
        }
        Place::V2(dir) => {
            let bfq = dir.join("io.bfq.weight").exists();
            if let Some(w) = b.weight() {
                if bfq {
                    set("blockIO.weight", dir, "io.bfq.weight", w)?;
                } else {
                    set(
                        "blockIO.weight",
                        dir,
                        "io.weight",
                        format!("default {}", blkio_to_io_weight(w)),
                    )?;
                }
            }
            if b.leaf_weight().is_some() {
                return Err(bad(
                    "blockIO.leafWeight",
                    "cgroup v2 has no leaf weights: remove the setting",
                ));
            }
            for (i, d) in b.weight_device().iter().flatten().enumerate() {
                if let Some(w) = d.weight() {
                    let field = format!("blockIO.weightDevice[{i}]");
                    if bfq {
                        set(
                            &field,
                            dir,
                            "io.bfq.weight",
                            format!("{}:{} {w}", d.major(), d.minor()),
                        )?;
                    } else {
                        set(
                            &field,
                            dir,
                            "io.weight",
                            format!("{}:{} {}", d.major(), d.minor(), blkio_to_io_weight(w)),
                        )?;
                    }
                }
            }
            for (field, list, _, key) in throttles {
                for (i, t) in list.iter().flatten().enumerate() {
                    let rate = if t.rate() == 0 {
                        "max".to_string()
                    } else {
                        t.rate().to_string()
                    };
                    set(
                        &format!("{field}[{i}]"),
                        dir,
                        "io.max",
                        format!("{}:{} {key}={rate}", t.major(), t.minor()),
                    )?;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- hugetlb

fn hugetlb(cg: &Cgroup, i: usize, h: &LinuxHugepageLimit) -> Result<()> {
    let field = format!("hugepageLimits[{i}]");
    let (dir, file) = match need(cg, "hugetlb", &field)? {
        Place::V1(dir) => (dir, format!("hugetlb.{}.limit_in_bytes", h.page_size())),
        Place::V2(dir) => (dir, format!("hugetlb.{}.max", h.page_size())),
    };
    if !dir.join(&file).exists() {
        let sizes: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let rest = n.strip_prefix("hugetlb.")?;
                        let (size, tail) = rest.split_once('.')?;
                        (tail == "max" || tail == "limit_in_bytes").then(|| size.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Err(bad(
            &format!("{field}.pageSize"),
            format!(
                "{:?} is not a huge page size of this host (it has: {})",
                h.page_size(),
                sizes.join(", ")
            ),
        ));
    }
    let value = if h.limit() < 0 {
        "max".to_string()
    } else {
        h.limit().to_string()
    };
    set(&field, dir, &file, value)
}

// ---------------------------------------------------------------- network, rdma, unified

fn network(cg: &Cgroup, n: &LinuxNetwork) -> Result<()> {
    if let Some(id) = n.class_id() {
        match need(cg, "net_cls", "network.classID")? {
            Place::V1(dir) => set("network.classID", dir, "net_cls.classid", id)?,
            Place::V2(_) => {
                return Err(bad(
                    "network.classID",
                    "net_cls is a cgroup v1 controller; not available here",
                ));
            }
        }
    }
    for (i, p) in n.priorities().iter().flatten().enumerate() {
        let field = format!("network.priorities[{i}]");
        match need(cg, "net_prio", &field)? {
            Place::V1(dir) => set(
                &field,
                dir,
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
            )?,
            Place::V2(_) => {
                return Err(bad(
                    &field,
                    "net_prio is a cgroup v1 controller; not available here",
                ));
            }
        }
    }
    Ok(())
}

fn rdma(cg: &Cgroup, r: &HashMap<String, LinuxRdma>) -> Result<()> {
    let mut devices: Vec<&String> = r.keys().collect();
    devices.sort();
    for dev in devices {
        let l = &r[dev];
        let field = format!("rdma.{dev}");
        let (Place::V1(dir) | Place::V2(dir)) = need(cg, "rdma", &field)?;
        let v = |x: Option<u32>| x.map_or("max".to_string(), |n| n.to_string());
        set(
            &field,
            dir,
            "rdma.max",
            format!(
                "{dev} hca_handle={} hca_object={}",
                v(l.hca_handles()),
                v(l.hca_objects())
            ),
        )?;
    }
    Ok(())
}

fn unified(cg: &Cgroup, u: &HashMap<String, String>) -> Result<()> {
    if u.is_empty() {
        return Ok(());
    }
    let Some(v2) = &cg.v2 else {
        return Err(bad(
            "unified",
            "this host has no cgroup v2 tree: use the v1 fields of linux.resources instead",
        ));
    };
    let mut keys: Vec<&String> = u.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("unified.{key}");
        if key.contains('/') || key.starts_with('.') || key.is_empty() {
            return Err(bad(&field, "not a cgroup file name"));
        }
        if let Some(controller) = key.split('.').next()
            && !v2.dir.join(key).exists()
            && controller != "cgroup"
        {
            cg.enable_v2_controller(controller);
        }
        if !v2.dir.join(key).exists() {
            let controller = key.split('.').next().unwrap_or_default();
            return Err(bad(
                &field,
                format!(
                    "{} has no file {key:?}: the {controller} controller is not enabled in this cgroup (available: {})",
                    v2.dir.display(),
                    match v2.controllers() {
                        c if c.is_empty() => "none".to_string(),
                        c => c.join(" "),
                    }
                ),
            ));
        }
        set(&field, &v2.dir, key, &u[key])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }

    #[test]
    fn why_a_controller_is_unavailable() {
        let table = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                     cpu\t1\t1\t1\nhugetlb\t13\t1\t1\nrdma\t0\t1\t1\nmisc\t0\t1\t0\n";
        assert!(unavailable("hugetlb", table).contains("bound to cgroup v1 hierarchy 13"));
        assert!(unavailable("hugetlb", table).contains("mount -t cgroup -o hugetlb"));
        assert!(unavailable("rdma", table).contains("v2 tree does not offer it"));
        assert!(unavailable("misc", table).contains("disabled"));
        assert!(unavailable("net_cls", table).contains("this kernel has none"));
    }
}
