//! Where the cgroup hierarchies are mounted and where this process sits in
//! them. One reading of `/proc/self/mountinfo` and `/proc/self/cgroup`
//! answers both; nothing here writes.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Controllers bound to it (`cpu`, `cpuacct`, ...) or `name=systemd`.
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
    /// The hierarchy path that the mount shows at its mountpoint.
    pub root: String,
    /// This process's cgroup in the hierarchy.
    pub own: String,
}

/// The cgroup2 mount (the whole tree on v2, the controller-less or
/// nearly controller-less "unified" tree on a hybrid host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Mount {
    pub mountpoint: PathBuf,
    pub root: String,
    pub own: String,
}

/// The cgroup filesystems of this host.
#[derive(Debug, Clone, Default)]
pub struct Hierarchies {
    pub v1: Vec<V1Mount>,
    pub v2: Option<V2Mount>,
}

/// The layout a host's cgroups follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Only v1 hierarchies.
    V1,
    /// v1 controllers plus a cgroup2 mount beside them.
    Hybrid,
    /// One cgroup2 tree holding every controller.
    V2,
}

impl Hierarchies {
    /// Reads the mounts and this process's membership from `/proc/self`.
    pub fn discover() -> Result<Hierarchies> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let membership = read("/proc/self/cgroup")?;
        let h = Self::parse(&mountinfo, &membership);
        if h.v1.is_empty() && h.v2.is_none() {
            return Err(Error::NoCgroupFs);
        }
        Ok(h)
    }

    /// The parsing half of `discover`, for tests.
    pub fn parse(mountinfo: &str, membership: &str) -> Hierarchies {
        let mut own_v1: Vec<(Vec<String>, String)> = Vec::new();
        let mut own_v2 = String::from("/");
        for line in membership.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(_id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if ctrls.is_empty() {
                own_v2 = path.to_string();
            } else {
                let mut c: Vec<String> = ctrls.split(',').map(str::to_string).collect();
                c.sort();
                own_v1.push((c, path.to_string()));
            }
        }
        let mut out = Hierarchies::default();
        for line in mountinfo.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let root = unescape(left[3]);
            let mountpoint = PathBuf::from(unescape(left[4]));
            match right[0] {
                "cgroup2" => {
                    // Prefer the mount that shows the whole tree.
                    let better = out.v2.as_ref().is_none_or(|m| m.root != "/" && root == "/");
                    if better {
                        out.v2 = Some(V2Mount {
                            mountpoint,
                            root,
                            own: own_v2.clone(),
                        });
                    }
                }
                "cgroup" => {
                    let mut controllers: Vec<String> = right[2]
                        .split(',')
                        .filter(|o| is_controller_option(o))
                        .map(str::to_string)
                        .collect();
                    controllers.sort();
                    if controllers.is_empty() {
                        continue;
                    }
                    if let Some(existing) = out.v1.iter_mut().find(|m| m.controllers == controllers)
                    {
                        if existing.root != "/" && root == "/" {
                            existing.mountpoint = mountpoint;
                            existing.root = root;
                        }
                        continue;
                    }
                    let own = own_v1
                        .iter()
                        .find(|(c, _)| *c == controllers)
                        .map(|(_, p)| p.clone())
                        .unwrap_or_else(|| "/".to_string());
                    out.v1.push(V1Mount {
                        controllers,
                        mountpoint,
                        root,
                        own,
                    });
                }
                _ => {}
            }
        }
        out
    }

    pub fn layout(&self) -> Layout {
        match (self.v1.is_empty(), &self.v2) {
            (true, _) => Layout::V2,
            (false, Some(_)) => Layout::Hybrid,
            (false, None) => Layout::V1,
        }
    }
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: PathBuf::from(path),
        source,
    })
}

/// Super options of a v1 mount that name what the hierarchy holds; the rest
/// (`rw`, `nsdelegate`, `clone_children`, ...) are mount options.
fn is_controller_option(o: &str) -> bool {
    const KNOWN: [&str; 14] = [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "net_cls",
        "net_prio",
        "perf_event",
        "hugetlb",
        "rdma",
        "misc",
    ];
    KNOWN.contains(&o) || o.starts_with("name=")
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Joins a hierarchy path onto the mountpoint that shows `root`.
pub fn dir_in(mountpoint: &Path, root: &str, path: &str) -> PathBuf {
    let rel = Path::new(path)
        .strip_prefix(root)
        .unwrap_or_else(|_| Path::new(path.trim_start_matches('/')));
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    mountpoint.join(rel)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const HYBRID_SELF: &str = "9:name=systemd:/\n4:memory:/jobs/x\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_layout() {
        let h = Hierarchies::parse(HYBRID, HYBRID_SELF);
        assert_eq!(h.layout(), Layout::Hybrid);
        assert_eq!(h.v1.len(), 4);
        let mem = h.v1.iter().find(|m| m.controllers == ["memory"]).unwrap();
        assert_eq!(mem.own, "/jobs/x");
        assert_eq!(mem.mountpoint, Path::new("/sys/fs/cgroup/memory"));
        let sd =
            h.v1.iter()
                .find(|m| m.controllers == ["name=systemd"])
                .unwrap();
        assert_eq!(sd.own, "/");
        assert_eq!(
            h.v2.unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn pure_v2_layout() {
        let h = Hierarchies::parse(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            "0::/user.slice/session-1.scope\n",
        );
        assert_eq!(h.layout(), Layout::V2);
        assert_eq!(h.v2.unwrap().own, "/user.slice/session-1.scope");
    }

    #[test]
    fn comounted_and_escaped() {
        let h = Hierarchies::parse(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n\
             33 31 0:30 / /mnt/my\\040cg rw - cgroup cgroup rw,pids\n",
            "3:cpu,cpuacct:/a\n2:pids:/b\n",
        );
        assert_eq!(h.layout(), Layout::V1);
        assert_eq!(h.v1[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(h.v1[0].own, "/a");
        assert_eq!(h.v1[1].mountpoint, Path::new("/mnt/my cg"));
    }

    #[test]
    fn dirs() {
        assert_eq!(
            dir_in(Path::new("/sys/fs/cgroup/cpu"), "/", "/a/b"),
            Path::new("/sys/fs/cgroup/cpu/a/b")
        );
        assert_eq!(dir_in(Path::new("/cg"), "/a", "/a/b"), Path::new("/cg/b"));
        assert_eq!(dir_in(Path::new("/cg"), "/", "/"), Path::new("/cg"));
    }
}
