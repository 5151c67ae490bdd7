//! The network namespace harness builds the topology it promises: LAN hosts reach the public
//! segment through their NAT router and are seen at its WAN address, LAN neighbours talk
//! directly, nothing new gets into a LAN, MASQUERADE keeps source ports and `--random-fully`
//! does not, multicast (what mDNS needs) crosses a LAN bridge but no router, and every
//! namespace is gone after drop, also after a failed build and from crashed runs.
//!
//! Needs root (skipped otherwise, failed under `CI`). Traffic comes from small python3
//! scripts run in the namespaces; every socket has a timeout, and every listener prints
//! `ready` before a client is started.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use common::netns::*;

/// Accepts TCP connections on (argv[1], argv[2]) until none came for 8 s, printing `peer <ip>
/// <port>` for each.
const TCP_LISTENER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
s.settimeout(8)
print("ready", flush=True)
while True:
    try:
        c, (ip, port) = s.accept()
    except socket.timeout:
        break
    print("peer", ip, port, flush=True)
    c.close()
"#;

/// Connects to (argv[1], argv[2]) within argv[3] seconds: prints `connected <seconds>` and
/// exits 0, or prints the error and exits 1.
const TCP_CONNECT: &str = r#"
import socket, sys, time
t = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as e:
    print("failed:", repr(e))
    sys.exit(1)
print("connected", time.monotonic() - t)
"#;

/// Receives argv[2] UDP datagrams on argv[1] and each of the ports argv[3:], printing `from
/// <ip> <port> to <local port>` for each; gives up after 5 s.
const UDP_LISTENER: &str = r#"
import select, socket, sys
socks = []
for port in sys.argv[3:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(port)))
    socks.append(s)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    readable, _, _ = select.select(socks, [], [], 5)
    if not readable:
        print("timeout", flush=True)
        break
    s = readable[0]
    _, (ip, port) = s.recvfrom(1500)
    print("from", ip, port, "to", s.getsockname()[1], flush=True)
"#;

/// Sends one UDP datagram from port argv[1] to argv[2] on each of the ports argv[3:], all
/// from the same socket.
const UDP_SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
for port in sys.argv[3:]:
    s.sendto(b"hello", (sys.argv[2], int(port)))
"#;

/// Joins 224.0.0.251 on the interface with address argv[1], listens on port 5353 and prints
/// `got <ip> <data>` for the first datagram, or `timeout` after argv[2] seconds.
const MDNS_LISTENER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5353))
group = struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    data, (ip, _) = s.recvfrom(1500)
    print("got", ip, data.decode(), flush=True)
except socket.timeout:
    print("timeout", flush=True)
"#;

/// Sends three datagrams `mdns-probe` to 224.0.0.251:5353 out of the interface with address
/// argv[1], 100 ms apart.
const MDNS_SEND: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
for _ in range(3):
    s.sendto(b"mdns-probe", ("224.0.0.251", 5353))
    time.sleep(0.1)
"#;

/// The real python3 executable (not a pyenv shim, whose extra processes could outlive a kill).
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the netns tests");
        String::from_utf8(out.stdout)
            .expect("python3 path is UTF-8")
            .trim()
            .to_owned()
    })
}

/// A python script running in a namespace that has printed `ready`; killed on drop.
struct Listener {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Listener {
    /// Starts `script` with `args` through `command` (from `Topology::command(host,
    /// python())`) and waits for its `ready` line.
    fn start(mut command: Command, script: &str, args: &[&str]) -> Listener {
        command
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start listener {command:?}: {e}"));
        let stdout = child.stdout.take().expect("listener stdout is piped");
        let mut listener = Listener {
            child,
            lines: BufReader::new(stdout),
        };
        let first = listener.next_line();
        assert_eq!(first, "ready", "listener {command:?} did not get ready");
        listener
    }

    /// Its next output line (panics when it ended).
    fn next_line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .lines
            .read_line(&mut line)
            .expect("reading listener output");
        assert!(n > 0, "listener ended without more output");
        line.trim().to_owned()
    }

    /// Stops it and returns the lines it printed and were not read yet.
    fn finish(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = Vec::new();
        let mut line = String::new();
        while self
            .lines
            .read_line(&mut line)
            .expect("reading listener output")
            > 0
        {
            rest.push(line.trim().to_owned());
            line.clear();
        }
        rest
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` (from `command(host, python())`) with `script` and `args` to completion:
/// its stdout when it succeeded, otherwise its stdout and stderr as the error.
fn python_run(mut command: Command, script: &str, args: &[&str]) -> Result<String, String> {
    let out = command
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python in a namespace: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A TCP connection attempt through `command` to `ip:port` with a `timeout_s` timeout.
fn tcp_connect(
    command: Command,
    ip: Ipv4Addr,
    port: u16,
    timeout_s: f64,
) -> Result<String, String> {
    python_run(
        command,
        TCP_CONNECT,
        &[&ip.to_string(), &port.to_string(), &timeout_s.to_string()],
    )
}

/// Parses a `peer <ip> <port>` or `from <ip> <port> ...` line into (ip, port).
fn peer_of(line: &str) -> (Ipv4Addr, u16) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(
        fields.len() >= 3 && (fields[0] == "peer" || fields[0] == "from"),
        "unexpected listener line {line:?}"
    );
    let ip = fields[1]
        .parse()
        .unwrap_or_else(|e| panic!("bad ip in {line:?}: {e}"));
    let port = fields[2]
        .parse()
        .unwrap_or_else(|e| panic!("bad port in {line:?}: {e}"));
    (ip, port)
}

/// Sends from `host` a UDP datagram from port 40001 to `pub` on ports 7001 and 7002 (one
/// socket) and returns the source (ip, port) `pub` saw for each, in port order.
fn udp_mappings(topo: &Topology, host: &str) -> Vec<(Ipv4Addr, u16)> {
    let public = topo.ip("pub").to_string();
    let mut listener = Listener::start(
        topo.command("pub", python()),
        UDP_LISTENER,
        &[&public, "2", "7001", "7002"],
    );
    python_run(
        topo.command(host, python()),
        UDP_SEND,
        &["40001", &public, "7001", "7002"],
    )
    .expect("sending UDP to pub");
    let mut seen: Vec<(u16, (Ipv4Addr, u16))> = (0..2)
        .map(|_| {
            let line = listener.next_line();
            let to: u16 = line
                .rsplit(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("`to <port>` in line");
            (to, peer_of(&line))
        })
        .collect();
    seen.sort();
    seen.into_iter().map(|(_, from)| from).collect()
}

#[test]
fn nat_routers_hide_lan_addresses() {
    if !require_root("nat_routers_hide_lan_addresses") {
        return;
    }
    let topo = Topology::build("hide", NatKind::Masquerade, 0).expect("building the topology");
    let public = topo.ip("pub");
    let mut listener = Listener::start(
        topo.command("pub", python()),
        TCP_LISTENER,
        &[&public.to_string(), "4001"],
    );

    tcp_connect(topo.command("a1", python()), public, 4001, 3.0).expect("a1 reaches pub");
    assert_eq!(
        peer_of(&listener.next_line()).0,
        Ipv4Addr::new(198, 51, 100, 11),
        "a1 seen from r1"
    );
    tcp_connect(topo.command("b1", python()), public, 4001, 3.0).expect("b1 reaches pub");
    assert_eq!(
        peer_of(&listener.next_line()).0,
        Ipv4Addr::new(198, 51, 100, 12),
        "b1 seen from r2"
    );
    assert_eq!(topo.ip("r1"), Ipv4Addr::new(198, 51, 100, 11));
    assert_eq!(topo.ip("b2"), Ipv4Addr::new(192, 168, 2, 3));
}

#[test]
fn lan_neighbours_talk_directly() {
    if !require_root("lan_neighbours_talk_directly") {
        return;
    }
    let topo = Topology::build("lan", NatKind::Masquerade, 0).expect("building the topology");
    let a2 = topo.ip("a2");
    assert_eq!(a2, Ipv4Addr::new(192, 168, 1, 3));
    let mut listener = Listener::start(
        topo.command("a2", python()),
        TCP_LISTENER,
        &[&a2.to_string(), "4002"],
    );

    tcp_connect(topo.command("a1", python()), a2, 4002, 3.0).expect("a1 reaches a2");
    assert_eq!(
        peer_of(&listener.next_line()).0,
        Ipv4Addr::new(192, 168, 1, 2),
        "a1 seen unNATed"
    );
}

#[test]
fn nothing_new_gets_into_a_lan() {
    if !require_root("nothing_new_gets_into_a_lan") {
        return;
    }
    let topo = Topology::build("closed", NatKind::Masquerade, 0).expect("building the topology");
    let a1 = topo.ip("a1");
    let b1 = topo.ip("b1");
    let a1_listener = Listener::start(
        topo.command("a1", python()),
        TCP_LISTENER,
        &["0.0.0.0", "4003"],
    );
    let b1_listener = Listener::start(
        topo.command("b1", python()),
        TCP_LISTENER,
        &["0.0.0.0", "4003"],
    );
    // The listeners work: their LAN neighbours get in.
    tcp_connect(topo.command("a2", python()), a1, 4003, 3.0).expect("a2 reaches a1");
    tcp_connect(topo.command("b2", python()), b1, 4003, 3.0).expect("b2 reaches b1");

    // Short timeouts: a refusal by routing is immediate, a drop by the firewall times out.
    let no_way = |from: &str, to: &str, ip: Ipv4Addr| {
        let started = Instant::now();
        let attempt = tcp_connect(topo.command(from, python()), ip, 4003, 1.0);
        eprintln!(
            "{from} -> {to} ({ip}): {attempt:?} after {:?}",
            started.elapsed()
        );
        assert!(attempt.is_err(), "{from} must not reach {to} at {ip}");
    };
    no_way("pub", "a1", a1);
    // Even with a route to LAN A through r1 (a hostile WAN neighbour), r1's firewall forwards
    // nothing new inwards.
    topo.run(
        "pub",
        &[
            "ip",
            "route",
            "add",
            "192.168.1.0/24",
            "via",
            "198.51.100.11",
        ],
    )
    .expect("adding a route in pub");
    no_way("pub", "a1", a1);
    // No port forwards: the router's WAN address does not lead in either.
    no_way("pub", "r1", topo.ip("r1"));
    no_way("a1", "b1", b1);
    no_way("b1", "a1", a1);

    let a1_peers = a1_listener.finish();
    let b1_peers = b1_listener.finish();
    assert_eq!(a1_peers.len(), 1, "only a2 got to a1: {a1_peers:?}");
    assert_eq!(peer_of(&a1_peers[0]).0, topo.ip("a2"));
    assert_eq!(b1_peers.len(), 1, "only b2 got to b1: {b1_peers:?}");
    assert_eq!(peer_of(&b1_peers[0]).0, topo.ip("b2"));
}

#[test]
fn masquerade_preserves_the_source_port() {
    if !require_root("masquerade_preserves_the_source_port") {
        return;
    }
    let topo = Topology::build("masq", NatKind::Masquerade, 0).expect("building the topology");
    let r1 = topo.ip("r1");
    // The port is free on r1, so Linux keeps it, towards every destination alike.
    assert_eq!(udp_mappings(&topo, "a1"), vec![(r1, 40001), (r1, 40001)]);
}

#[test]
fn random_fully_randomises_the_source_port() {
    if !require_root("random_fully_randomises_the_source_port") {
        return;
    }
    let topo = Topology::build("rnd", NatKind::RandomFully, 0).expect("building the topology");
    let r1 = topo.ip("r1");
    let seen = udp_mappings(&topo, "a1");
    assert!(
        seen.iter().all(|&(ip, _)| ip == r1),
        "a1 seen from r1: {seen:?}"
    );
    // Linux `--random-fully` draws a random port for every new mapping (conntrack entry), here
    // one per destination port: they differ from 40001 and from each other, like a symmetric
    // NAT. Each check has a chance of about 1 in 64512 of a coincidence.
    assert!(
        seen.iter().any(|&(_, port)| port != 40001),
        "some port randomised: {seen:?}"
    );
    assert_ne!(
        seen[0].1, seen[1].1,
        "one mapping per destination: {seen:?}"
    );
}

#[test]
fn lan_multicast_reaches_every_host() {
    if !require_root("lan_multicast_reaches_every_host") {
        return;
    }
    let lan = Lan::build("mcast", 3).expect("building the LAN");
    assert_eq!(lan.ip("h1"), Ipv4Addr::new(10, 77, 0, 2));
    assert_eq!(lan.ip("h3"), Ipv4Addr::new(10, 77, 0, 4));
    let mut listeners: Vec<Listener> = ["h2", "h3"]
        .iter()
        .map(|host| {
            Listener::start(
                lan.command(host, python()),
                MDNS_LISTENER,
                &[&lan.ip(host).to_string(), "5"],
            )
        })
        .collect();

    python_run(
        lan.command("h1", python()),
        MDNS_SEND,
        &[&lan.ip("h1").to_string()],
    )
    .expect("h1 sends to 224.0.0.251");
    for listener in &mut listeners {
        assert_eq!(listener.next_line(), "got 10.77.0.2 mdns-probe");
    }
}

#[test]
fn multicast_stays_on_its_lan() {
    if !require_root("multicast_stays_on_its_lan") {
        return;
    }
    let topo = Topology::build("mcastnat", NatKind::Masquerade, 0).expect("building the topology");
    let mut a2 = Listener::start(
        topo.command("a2", python()),
        MDNS_LISTENER,
        &[&topo.ip("a2").to_string(), "3"],
    );
    let mut b1 = Listener::start(
        topo.command("b1", python()),
        MDNS_LISTENER,
        &[&topo.ip("b1").to_string(), "1.5"],
    );

    python_run(
        topo.command("a1", python()),
        MDNS_SEND,
        &[&topo.ip("a1").to_string()],
    )
    .expect("a1 sends to 224.0.0.251");
    assert_eq!(a2.next_line(), "got 192.168.1.2 mdns-probe");
    assert_eq!(
        b1.next_line(),
        "timeout",
        "multicast must not cross the routers"
    );
}

#[test]
fn wan_delay_adds_latency_or_fails_cleanly() {
    if !require_root("wan_delay_adds_latency_or_fails_cleanly") {
        return;
    }
    match Topology::build("delay", NatKind::Masquerade, 50) {
        Ok(topo) => {
            let public = topo.ip("pub");
            let _listener = Listener::start(
                topo.command("pub", python()),
                TCP_LISTENER,
                &[&public.to_string(), "4004"],
            );
            let out = tcp_connect(topo.command("a1", python()), public, 4004, 3.0)
                .expect("a1 reaches pub");
            let seconds: f64 = out
                .strip_prefix("connected ")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("unexpected connect output {out:?}"));
            // The SYN leaves through r1's delayed WAN interface.
            assert!(
                seconds >= 0.05,
                "connect took {seconds} s, less than the 50 ms delay"
            );
        }
        Err(e) => {
            // Kernels without sch_netem (CONFIG_NET_SCH_NETEM) cannot delay; the build must say
            // so and leave nothing behind.
            assert!(
                e.to_string().contains("netem"),
                "unexpected build error: {e}"
            );
            eprintln!("no WAN delay here: {e}");
            let left = own_namespaces("delay").expect("listing namespaces");
            assert!(left.is_empty(), "a failed build left namespaces: {left:?}");
        }
    }
}

#[test]
fn dropping_deletes_every_namespace() {
    if !require_root("dropping_deletes_every_namespace") {
        return;
    }
    let started = Instant::now();
    let topo = Topology::build("drop", NatKind::Masquerade, 0).expect("building the topology");
    eprintln!("built a topology in {:?}", started.elapsed());
    let names: Vec<String> = ["pub", "r1", "r2", "a1", "a2", "b1", "b2"]
        .iter()
        .map(|h| topo.ns(h))
        .collect();
    let mut own = own_namespaces("drop").expect("listing namespaces");
    own.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(own, expected, "exactly the topology's namespaces exist");
    // A process left running in a namespace is killed, not left holding it.
    let mut sleeper = topo
        .command("a1", "sleep")
        .arg("30")
        .spawn()
        .expect("starting sleep in a1");

    let started = Instant::now();
    drop(topo);
    eprintln!("dropped it in {:?}", started.elapsed());
    let left = own_namespaces("drop").expect("listing namespaces");
    assert!(left.is_empty(), "namespaces left after drop: {left:?}");
    let status = sleeper.wait().expect("waiting for sleep");
    assert_eq!(
        status.signal(),
        Some(9),
        "sleep in a1 was killed: {status:?}"
    );
}

#[test]
fn topologies_with_one_tag_coexist() {
    if !require_root("topologies_with_one_tag_coexist") {
        return;
    }
    let first =
        Topology::build("twice", NatKind::Masquerade, 0).expect("building the first topology");
    let second =
        Topology::build("twice", NatKind::RandomFully, 0).expect("building the second topology");
    assert_ne!(first.ns("a1"), second.ns("a1"));
    for topo in [&first, &second] {
        let public = topo.ip("pub");
        let mut listener = Listener::start(
            topo.command("pub", python()),
            TCP_LISTENER,
            &[&public.to_string(), "4005"],
        );
        tcp_connect(topo.command("a1", python()), public, 4005, 3.0).expect("a1 reaches its pub");
        assert_eq!(peer_of(&listener.next_line()).0, topo.ip("r1"));
        assert_eq!(
            topo.run("r1", &["ip", "-br", "addr", "show", "wan0"])
                .expect("ip addr in r1")
                .split_whitespace()
                .nth(2),
            Some("198.51.100.11/24")
        );
    }
}

#[test]
fn stale_namespaces_of_dead_processes_are_deleted() {
    if !require_root("stale_namespaces_of_dead_processes_are_deleted") {
        return;
    }
    let ours = process_prefix("stale");
    // No process has pid 99999999 (pid_max is at most 2^22), and our own pid with another
    // start time is a dead process whose pid was reused. (Our pid in the first name keeps it
    // apart from a parallel run's.)
    let (pid_part, start) = ours.rsplit_once('.').expect("prefix has <pid>.<start>");
    let start: u64 = start.parse().expect("start time is a number");
    let dead = [
        format!("qs-stale-99999999.{}-0-pub", std::process::id()),
        format!("{pid_part}.{}-0-pub", start + 1),
    ];
    let alive = format!("{ours}-999999-pub");
    for name in dead.iter().chain([&alive]) {
        let status = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("running ip netns add");
        assert!(status.success(), "creating {name}");
    }

    let topo = Topology::build("stale", NatKind::Masquerade, 0).expect("building the topology");
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let _ = Command::new("ip")
        .args(["netns", "delete", &alive])
        .status();
    for name in &dead {
        assert!(
            !names.contains(&name.as_str()),
            "stale {name} was not deleted"
        );
    }
    assert!(
        names.contains(&alive.as_str()),
        "{alive} of a live process was deleted"
    );
    assert!(names.contains(&topo.ns("pub").as_str()));
}
