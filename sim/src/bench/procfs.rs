//! What the benches read about processes from `/proc` (Linux): open files
//! against the limit, a broker's listening ports and established
//! connections, a process's children. The parsing is pure and tested; the
//! reading is the thin edge.

use std::collections::{BTreeSet, HashMap};

/// A TCP socket from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local_port: u16,
    pub listening: bool,
}

/// `/proc/net/tcp` (or tcp6) text → socket inode → socket.
pub fn parse_net_tcp(text: &str) -> HashMap<u64, TcpSocket> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Some(port) = f[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        out.insert(
            inode,
            TcpSocket {
                local_port: port,
                listening: f[3] == "0A",
            },
        );
    }
    out
}

/// The "Max open files" soft limit from `/proc/PID/limits` text.
pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open files of a process, and its soft limit.
pub fn open_files(pid: u32) -> (usize, Option<u64>) {
    let n = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| parse_open_files_limit(&t));
    (n, limit)
}

/// The socket inodes a process holds.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            t.to_string_lossy()
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// A process's TCP sockets: the ports it listens on and how many
/// connections it holds (any other TCP socket).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpUse {
    pub listening: BTreeSet<u16>,
    pub connections: usize,
}

pub fn tcp_use(pid: u32) -> TcpUse {
    let mut table = HashMap::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = std::fs::read_to_string(f) {
            table.extend(parse_net_tcp(&t));
        }
    }
    let mut out = TcpUse::default();
    for inode in socket_inodes(pid) {
        match table.get(&inode) {
            Some(s) if s.listening => {
                out.listening.insert(s.local_port);
            }
            Some(_) => out.connections += 1,
            None => {}
        }
    }
    out
}

/// The direct children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_tcp_lines_give_ports_and_listeners() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1
";
        let t = parse_net_tcp(text);
        assert_eq!(
            t[&4242],
            TcpSocket {
                local_port: 8080,
                listening: true
            }
        );
        assert!(!t[&4243].listening);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_open_files_soft_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units
Max processes             62987                62987                processes
Max open files            20000                20000                files
";
        assert_eq!(parse_open_files_limit(limits), Some(20_000));
        assert_eq!(parse_open_files_limit("nothing"), None);
    }

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id();
        let (n, limit) = open_files(me);
        assert!(n > 0);
        assert!(limit.unwrap() > 0);
        assert!(alive(me));
    }
}
