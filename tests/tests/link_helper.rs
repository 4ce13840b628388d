//! The link helper itself (`fleet_tests::link`): a namespaced host reaches
//! a TCP service in the root namespace through its link; `cut` silences
//! the link and `restore` brings it back; `rate` limits a transfer; `loss`
//! drops packets at random. Needs root: without it these fail, loudly.
//!
//! The programs inside the namespace are bash and coreutils (`/dev/tcp`,
//! `/dev/udp`, `timeout`), so the helper is tested without our own binaries.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleet_tests::link::Host;

/// A line echo server on `addr` (port 0: a free one), one thread per client.
fn echo_server(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(addr).unwrap();
    let local = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if writeln!(w, "{line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    (local, t)
}

/// A server that sends zeros as fast as the client takes them.
fn source_server(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let buf = [0u8; 16 * 1024];
                while stream.write_all(&buf).is_ok() {}
            });
        }
    });
    local
}

/// Inside `host`: connect to `to`, send a line, print the answer; bounded
/// by `secs` (exit status 124 when it ran out).
fn echo_from(host: &Host, to: SocketAddr, secs: u32, line: &str) -> (bool, String) {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && echo {line} >&3 && read -r answer <&3 && echo \"$answer\"",
        to.ip(),
        to.port()
    );
    let out = host
        .run("timeout", &[&secs.to_string(), "bash", "-c", &script])
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

#[test]
fn a_host_reaches_the_root_namespace_and_a_cut_silences_the_link_until_restored() {
    let host = Host::require();
    let (echo, _t) = echo_server(SocketAddr::from((host.root_addr, 0)));

    let (ok, answer) = echo_from(&host, echo, 10, "hello");
    assert!(ok && answer == "hello", "through the link: {ok} {answer:?}");

    // `localhost` inside is the root side of the link.
    let script = format!(
        "exec 3<>/dev/tcp/localhost/{} && echo named >&3 && read -r a <&3 && echo \"$a\"",
        echo.port()
    );
    let out = host.run("timeout", &["10", "bash", "-c", &script]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "named");

    host.cut().unwrap();
    let (ok, answer) = echo_from(&host, echo, 3, "lost");
    assert!(!ok && answer.is_empty(), "a cut link carried {answer:?}");
    assert!(host.dropped().unwrap() > 0, "the cut dropped nothing");

    host.restore().unwrap();
    let (ok, answer) = echo_from(&host, echo, 10, "back");
    assert!(ok && answer == "back", "after restore: {ok} {answer:?}");
}

#[test]
fn a_connection_open_across_a_cut_carries_on_after_restore() {
    let host = Host::require();
    let (echo, _t) = echo_server(SocketAddr::from((host.root_addr, 0)));
    // One connection: a line, then (during the cut) a second line, which
    // TCP retransmits until the link returns.
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; echo one >&3; read -r a <&3; echo \"$a\"; sleep 2; echo two >&3; read -r b <&3; echo \"$b\"",
        echo.ip(),
        echo.port()
    );
    let mut child = host
        .command("timeout", &["60", "bash", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    host.cut().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    host.restore().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "the connection did not survive: {out:?}"
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["one", "two"]);
}

/// Bytes (to the host) a client inside reads from `source` in `secs` seconds,
/// and the seconds it really took.
fn pull(host: &Host, source: SocketAddr, secs: u32) -> (u64, f64) {
    let before = host.bytes().unwrap();
    let start = Instant::now();
    let script = format!("cat </dev/tcp/{}/{} >/dev/null", source.ip(), source.port());
    let _ = host
        .run("timeout", &[&secs.to_string(), "bash", "-c", &script])
        .unwrap();
    let took = start.elapsed().as_secs_f64();
    (host.bytes().unwrap().since(before).to_host, took)
}

#[test]
fn rate_limits_a_transfer_both_ways() {
    let host = Host::require();
    let source = source_server(SocketAddr::from((host.root_addr, 0)));

    let (free, free_secs) = pull(&host, source, 2);
    host.rate(512).unwrap();
    let (limited, limited_secs) = pull(&host, source, 3);
    let free_rate = free as f64 / free_secs;
    let limited_rate = limited as f64 / limited_secs;
    let configured = 512.0 * 1000.0 / 8.0;
    println!(
        "unlimited: {free} B in {free_secs:.1} s ({:.0} kB/s); 512 kbit/s: {limited} B in {limited_secs:.1} s ({:.1} kB/s)",
        free_rate / 1000.0,
        limited_rate / 1000.0
    );
    assert!(limited > 0, "nothing passed the limited link");
    // The bucket's burst lets a little more through at the start; the wire
    // bytes include each packet's headers, which the limit counts too.
    assert!(
        limited_rate < configured * 1.5,
        "the limit let {limited_rate:.0} B/s through, configured {configured:.0}"
    );
    assert!(
        free_rate > limited_rate * 5.0,
        "the unlimited link ({free_rate:.0} B/s) was not clearly faster than the limited one"
    );

    // Lifting the limit gives the speed back.
    host.rate(0).unwrap();
    let (again, again_secs) = pull(&host, source, 2);
    assert!(again as f64 / again_secs > limited_rate * 5.0);
}

#[test]
fn loss_drops_about_the_share_asked_for_and_tcp_still_gets_through() {
    let host = Host::require();
    let (echo, _t) = echo_server(SocketAddr::from((host.root_addr, 0)));
    let sink = std::net::UdpSocket::bind(SocketAddr::from((host.root_addr, 0))).unwrap();
    let sink_addr = sink.local_addr().unwrap();

    host.loss(10).unwrap();
    // Read as they come (the socket's buffer holds fewer than 1,000), up
    // to the end mark sent from this side, which no rule touches.
    sink.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let receiver = std::thread::spawn(move || {
        let mut received = 0u32;
        let mut buf = [0u8; 64];
        while let Ok(n) = sink.recv(&mut buf) {
            if &buf[..n] == b"end" {
                break;
            }
            received += 1;
        }
        received
    });
    // 1,000 datagrams from inside; the root side's rule drops about 100.
    let script = format!(
        "for i in $(seq 1000); do echo $i >/dev/udp/{}/{}; done",
        sink_addr.ip(),
        sink_addr.port()
    );
    let out = host.run("timeout", &["60", "bash", "-c", &script]).unwrap();
    assert!(out.status.success());
    std::net::UdpSocket::bind(SocketAddr::from((host.root_addr, 0)))
        .unwrap()
        .send_to(b"end", sink_addr)
        .unwrap();
    let received = receiver.join().unwrap();
    let dropped = host.dropped().unwrap();
    println!(
        "10 % loss: {received} of 1000 datagrams arrived; the rules dropped {dropped} packets"
    );
    assert!(
        (30..=250).contains(&(1000 - received)),
        "{} of 1000 lost at 10 %",
        1000 - received
    );
    assert!(dropped >= u64::from(1000 - received));

    // TCP retransmits through a lossy link.
    for i in 0..5 {
        let (ok, answer) = echo_from(&host, echo, 30, &format!("line{i}"));
        assert!(ok && answer == format!("line{i}"), "{ok} {answer:?}");
    }
}

#[test]
fn hosts_get_their_own_names_and_subnets_and_are_removed_on_drop() {
    let a = Host::require();
    let b = Host::require();
    assert_ne!(a.name, b.name);
    assert_ne!(a.root_addr, b.root_addr);
    assert!(a.name.len() <= 15, "interface name {} too long", a.name);
    let name = a.name.clone();
    drop(a);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name.as_str())));
    assert!(!std::path::Path::new("/sys/class/net").join(&name).exists());
    assert!(!std::path::Path::new("/etc/netns").join(&name).exists());
}

#[test]
fn a_panicking_test_still_removes_its_host() {
    let name = std::thread::spawn(|| {
        let host = Host::require();
        let name = host.name.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _host = host;
            panic!("a test failing half-way");
        }));
        assert!(r.is_err());
        name
    })
    .join()
    .unwrap();
    assert!(!std::path::Path::new("/sys/class/net").join(&name).exists());
    assert!(!std::path::Path::new("/etc/netns").join(&name).exists());
}
