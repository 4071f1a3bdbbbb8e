//! How many CPUs this process may actually use, for `workers = 0`: the CPUs its affinity
//! mask allows (`taskset`, `docker --cpuset-cpus`), capped by its cgroup's CPU quota
//! (`docker --cpus`, a Kubernetes CPU limit), rounded up, and at least 1.
//!
//! `std::thread::available_parallelism` honours both on Linux too, but it rounds a quota
//! down (1.5 CPUs gives 1 worker, leaving half the quota unused), so the quota is read
//! here: cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, at every
//! level from the process's group up to the mount (the tightest wins). Every file is
//! read under a root folder, so tests lay out a fake `/proc` and `/sys` in a temp folder.

use std::path::{Path, PathBuf};

/// The CPUs this process may use (see the module doc), at least 1.
pub fn usable() -> usize {
    usable_under(Path::new("/"))
}

/// [`usable`] with `/proc` and `/sys` read under `root`.
pub fn usable_under(root: &Path) -> usize {
    let affinity = read(root, "proc/self/status")
        .and_then(|s| affinity_from_status(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    combine(affinity, cgroup_quota(root))
}

/// The affinity count capped by the quota (whole CPUs, rounded up), at least 1.
pub fn combine(affinity: usize, quota: Option<usize>) -> usize {
    quota.map_or(affinity, |q| affinity.min(q)).max(1)
}

fn read(root: &Path, rel: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

/// The number of CPUs in `Cpus_allowed_list:` of /proc/self/status.
pub fn affinity_from_status(status: &str) -> Option<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list.trim())
}

/// Counts a kernel CPU list such as `0-3,8,10-11` (7).
pub fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// Whole CPUs (rounded up) for a quota and period in microseconds.
fn ceil_cpus(quota: u64, period: u64) -> Option<usize> {
    (quota > 0 && period > 0).then(|| quota.div_ceil(period) as usize)
}

/// cgroup v2 `cpu.max`: `150000 100000` is 2 CPUs; `max 100000` is no limit.
pub fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut f = text.split_whitespace();
    let (quota, period) = (f.next()?, f.next().unwrap_or("100000"));
    ceil_cpus(quota.parse().ok()?, period.parse().ok()?)
}

/// cgroup v1: `cpu.cfs_quota_us` (`-1`: no limit) and `cpu.cfs_period_us`.
pub fn parse_cfs(quota: &str, period: &str) -> Option<usize> {
    let quota: i64 = quota.trim().parse().ok()?;
    ceil_cpus(u64::try_from(quota).ok()?, period.trim().parse().ok()?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cgroup {
    V1,
    V2,
}

/// The process's group from /proc/self/cgroup: the v1 line whose controllers include
/// `cpu`, else the v2 line (`0::/path`). The path comes back relative.
pub fn own_cgroup(proc_cgroup: &str) -> Option<(Cgroup, PathBuf)> {
    let mut found = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let kind = if controllers.is_empty() {
            Cgroup::V2
        } else if controllers.split(',').any(|c| c == "cpu") {
            Cgroup::V1
        } else {
            continue;
        };
        let rel = PathBuf::from(path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            continue;
        }
        if kind == Cgroup::V1 || found.is_none() {
            found = Some((kind, rel));
        }
    }
    found
}

/// The tightest quota between the process's group and its mount, in whole CPUs.
fn cgroup_quota(root: &Path) -> Option<usize> {
    let (kind, group) = own_cgroup(&read(root, "proc/self/cgroup")?)?;
    let mounts: &[&str] = match kind {
        Cgroup::V2 => &["sys/fs/cgroup", "sys/fs/cgroup/unified"],
        Cgroup::V1 => &["sys/fs/cgroup/cpu,cpuacct", "sys/fs/cgroup/cpu"],
    };
    let level = |dir: &Path| match kind {
        Cgroup::V2 => parse_cpu_max(&read(dir, "cpu.max")?),
        Cgroup::V1 => parse_cfs(
            &read(dir, "cpu.cfs_quota_us")?,
            &read(dir, "cpu.cfs_period_us")?,
        ),
    };
    let marker = match kind {
        Cgroup::V2 => "cgroup.controllers",
        Cgroup::V1 => "cpu.cfs_period_us",
    };
    let mount = mounts
        .iter()
        .map(|m| root.join(m))
        .find(|m| m.join(marker).exists())?;
    // In a container without its own cgroup namespace the group named in
    // /proc/self/cgroup is the host's path; the container's group is the mount itself.
    let leaf = Some(mount.join(&group)).filter(|l| l.exists());
    let mut dir = leaf.unwrap_or_else(|| mount.clone());
    let mut tightest: Option<usize> = None;
    loop {
        if let Some(q) = level(&dir) {
            tightest = Some(tightest.map_or(q, |t| t.min(q)));
        }
        if dir == mount || !dir.pop() || !dir.starts_with(&mount) {
            return tightest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_quotas_parse() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        let status =
            "Name:\tportcullis\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed:\t1\n";
        assert_eq!(affinity_from_status(status), Some(2));
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("100000 100000"), Some(1));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("250000\n", "100000\n"), Some(3));
        assert_eq!(combine(8, Some(2)), 2);
        assert_eq!(combine(2, Some(16)), 2);
        assert_eq!(combine(4, None), 4);
        assert_eq!(combine(0, None), 1);
    }

    #[test]
    fn own_cgroup_prefers_the_v1_cpu_line() {
        let v1 = "12:pids:/x\n3:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n";
        assert_eq!(
            own_cgroup(v1),
            Some((Cgroup::V1, PathBuf::from("kubepods/pod1/c1")))
        );
        assert_eq!(
            own_cgroup("0::/system.slice/p.service\n"),
            Some((Cgroup::V2, PathBuf::from("system.slice/p.service")))
        );
        assert_eq!(own_cgroup("4:memory:/m\n"), None);
        assert_eq!(own_cgroup("0::/../x\n"), None);
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v2_quota_is_the_tightest_level_rounded_up() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "proc/self/status", "Cpus_allowed_list:\t0-7\n");
        write(r, "proc/self/cgroup", "0::/app.slice/gw.service\n");
        write(r, "sys/fs/cgroup/cgroup.controllers", "cpu io\n");
        write(r, "sys/fs/cgroup/app.slice/cpu.max", "300000 100000\n");
        write(
            r,
            "sys/fs/cgroup/app.slice/gw.service/cgroup.controllers",
            "",
        );
        write(
            r,
            "sys/fs/cgroup/app.slice/gw.service/cpu.max",
            "max 100000\n",
        );
        assert_eq!(usable_under(r), 3);
        write(
            r,
            "sys/fs/cgroup/app.slice/gw.service/cpu.max",
            "150000 100000\n",
        );
        assert_eq!(usable_under(r), 2, "1.5 CPUs round up");
        // The affinity mask is tighter than the quota.
        write(r, "proc/self/status", "Cpus_allowed_list:\t2\n");
        assert_eq!(usable_under(r), 1);
    }

    #[test]
    fn v1_quota_and_a_host_path_that_is_not_mounted() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "proc/self/status", "Cpus_allowed_list:\t0-3\n");
        // The host's path: this container sees its own group at the mount root.
        write(
            r,
            "proc/self/cgroup",
            "2:cpuacct:/\n1:cpu:/docker/abc\n0::/\n",
        );
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
        assert_eq!(usable_under(r), 4, "no quota: the affinity mask");
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "120000\n");
        assert_eq!(usable_under(r), 2);
        // Nothing readable: the mask alone, and never 0.
        let empty = tempfile::tempdir().unwrap();
        assert!(usable_under(empty.path()) >= 1);
    }
}
