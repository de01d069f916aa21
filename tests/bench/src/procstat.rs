//! Reading /proc: a process's resident set, CPU time of a process tree, and the
//! machine's busy/total CPU time.

use std::collections::HashMap;
use std::fs;

/// VmRSS of `pid` in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// VmRSS and its parts (RssAnon, RssFile, RssShmem) and VmHWM of `pid`, in KiB.
pub fn mem(pid: u32) -> serde_json::Value {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return serde_json::Value::Null;
    };
    let mut m = serde_json::Map::new();
    for line in status.lines() {
        if let Some((k, v)) = line.split_once(':')
            && matches!(
                k,
                "VmRSS" | "RssAnon" | "RssFile" | "RssShmem" | "VmHWM" | "Threads"
            )
            && let Some(n) = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        {
            m.insert(k.to_owned(), n.into());
        }
    }
    serde_json::Value::Object(m)
}

/// Open file descriptors of `pid` (sockets included).
pub fn fd_count(pid: u32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// (ppid, utime + stime in ticks) of one process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU ticks (user + system) used so far by `root` and all its live descendants.
pub fn tree_ticks(root: u32) -> u64 {
    let mut parent: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok())
                && let Some(s) = stat(pid)
            {
                parent.insert(pid, s);
            }
        }
    }
    parent
        .iter()
        .filter(|(pid, _)| {
            let mut p = **pid;
            for _ in 0..64 {
                if p == root {
                    return true;
                }
                match parent.get(&p) {
                    Some((pp, _)) if *pp != 0 && *pp != p => p = *pp,
                    _ => return false,
                }
            }
            false
        })
        .map(|(_, (_, t))| *t)
        .sum()
}

/// (busy, total) ticks of all CPUs from the first line of /proc/stat.
pub fn machine_ticks() -> (u64, u64) {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}
