//! Real network topologies in Linux network namespaces, so tests can run `quickstore node`
//! processes on separate "hosts", behind NATs, on one machine. Needs root (see
//! [`require_root`]) and the `ip`, `iptables` and (for WAN delay and rate limits) `tc` tools.
//!
//! Naming: every namespace is called `qs-<tag>-<pid>.<start>-<n>-<host>`, where `<pid>` and
//! `<start>` identify the creating process (its pid and its start time in clock ticks since
//! boot, from `/proc/<pid>/stat`, which tells a dead owner from a recycled pid) and `<n>` counts
//! topologies within the process. A build first deletes the `qs-<tag>-` namespaces whose owner
//! is gone (left by a crashed run); those of live processes are left alone.
//!
//! Interfaces are always created directly inside fresh namespaces (`ip -n A link add eth0 type
//! veth peer name x netns B`), never in the root namespace, so short fixed names (`eth0`,
//! `wan0`, `br0`, one bridge port per attached host) are unique by construction and several
//! topologies can be built at once by threads or processes.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// How a NAT router maps its LAN hosts' connections onto its WAN address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// `iptables -t nat -A POSTROUTING -o <wan> -j MASQUERADE`: Linux keeps the source port
    /// when it is free, so one socket appears on the same WAN port towards every destination.
    Masquerade,
    /// The same with `--random-fully`: every new mapping (conntrack entry) gets a random WAN
    /// port, so one socket appears on different ports towards different destinations, like a
    /// symmetric NAT.
    RandomFully,
}

/// The public segment 198.51.100.0/24 (namespace `pub`, with the bootstrap/relay address
/// 198.51.100.1) and two NAT routers on it, `r1` (198.51.100.11) in front of LAN A
/// 192.168.1.0/24 with hosts `a1` (.2) and `a2` (.3), and `r2` (198.51.100.12) in front of
/// LAN B 192.168.2.0/24 with hosts `b1` (.2) and `b2` (.3). Routers forward LAN to WAN and
/// only established or related traffic back: nothing new gets in from the WAN, there are no
/// port forwards and no hairpinning. Multicast stays on each LAN. All namespaces are deleted
/// on drop.
pub struct Topology {
    nets: Namespaces,
}

/// One plain LAN 10.77.0.0/24: a bridge in namespace `switch` and hosts `h1` (10.77.0.2),
/// `h2` (10.77.0.3), ... with multicast (e.g. mDNS on 224.0.0.251:5353) flooded to every
/// host. All namespaces are deleted on drop.
pub struct Lan {
    nets: Namespaces,
}

/// Counts the topologies built by this process, for unique namespace names.
static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(0);

/// Whether this process runs with effective uid 0 (read from `/proc/self/status`).
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// Whether the network namespace test `test` can run: false (after printing why) when not
/// root, unless the environment variable `CI` is set, where it panics instead because CI runs
/// as root and must fail rather than skip. As root, panics when `ip` or `iptables` is missing.
pub fn require_root(test: &str) -> bool {
    if !is_root() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{test}: needs root for network namespaces, and CI (which must run as root) is set"
            );
        }
        eprintln!("{test}: skipped: needs root for network namespaces");
        return false;
    }
    for tool in ["ip", "iptables"] {
        if find_program(tool).is_none() {
            panic!("{test}: the network namespace tests need `{tool}`, which is not in PATH");
        }
    }
    true
}

/// The namespace name prefix `qs-<tag>-<pid>.<start>` of this process for `tag`.
pub fn process_prefix(tag: &str) -> String {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    format!("qs-{}-{pid}.{start}", sanitize_tag(tag))
}

/// The namespaces of this process for `tag` that exist now.
pub fn own_namespaces(tag: &str) -> io::Result<Vec<String>> {
    let prefix = format!("{}-", process_prefix(tag));
    Ok(list_namespaces()?
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect())
}

impl Topology {
    /// Builds the topology (see [`Topology`]) with NAT `nat` on both routers and, when
    /// `wan_delay_ms` > 0, a `tc netem` delay on each router's WAN interface (outgoing). What
    /// was created is deleted again when building fails half-way.
    pub fn build(tag: &str, nat: NatKind, wan_delay_ms: u32) -> io::Result<Topology> {
        let mut nets = Namespaces::new(tag)?;
        nets.add("pub")?;
        nets.bridge("pub", Some("198.51.100.1/24"))?;
        let sites = [
            ("r1", "198.51.100.11", "192.168.1", ["a1", "a2"]),
            ("r2", "198.51.100.12", "192.168.2", ["b1", "b2"]),
        ];
        for (router, wan, lan, hosts) in sites {
            nets.add(router)?;
            nets.attach(router, "wan0", "pub", &format!("{wan}/24"))?;
            nets.ip_cmd(router, "route add default via 198.51.100.1")?;
            nets.bridge(router, Some(&format!("{lan}.1/24")))?;
            nets.nat(router, nat)?;
            if wan_delay_ms > 0 {
                nets.delay(router, "wan0", wan_delay_ms)?;
            }
            for (i, host) in hosts.into_iter().enumerate() {
                nets.add(host)?;
                nets.attach(host, "eth0", router, &format!("{lan}.{}/24", i + 2))?;
                nets.ip_cmd(host, &format!("route add default via {lan}.1"))?;
            }
        }
        Ok(Topology { nets })
    }
}

impl Lan {
    /// Builds a LAN with `hosts` hosts (1 to 253) named `h1`, `h2`, ...
    pub fn build(tag: &str, hosts: usize) -> io::Result<Lan> {
        assert!(
            (1..=253).contains(&hosts),
            "a Lan has 1 to 253 hosts, not {hosts}"
        );
        let mut nets = Namespaces::new(tag)?;
        nets.add("switch")?;
        nets.bridge("switch", None)?;
        for i in 1..=hosts {
            let host = format!("h{i}");
            nets.add(&host)?;
            nets.attach(&host, "eth0", "switch", &format!("10.77.0.{}/24", i + 1))?;
            // Without a gateway there is no default route, and a socket that names neither
            // a source address nor IP_MULTICAST_IF needs a route to send to a group
            // (ENETUNREACH otherwise).
            nets.ip_cmd(&host, "route add 224.0.0.0/4 dev eth0")?;
        }
        Ok(Lan { nets })
    }
}

impl std::ops::Deref for Topology {
    type Target = Namespaces;

    /// Hosts `pub`, `r1`, `r2`, `a1`, `a2`, `b1`, `b2`; a router's address is its WAN one.
    fn deref(&self) -> &Namespaces {
        &self.nets
    }
}

impl std::ops::Deref for Lan {
    type Target = Namespaces;

    /// Hosts `switch`, `h1` (10.77.0.2), `h2`, ...
    fn deref(&self) -> &Namespaces {
        &self.nets
    }
}

/// The namespaces of one topology by host name, with each host's first address; deletes them
/// on drop. [`Topology`] and [`Lan`] give access to theirs (`ns`, `ip`, `command`, `run`).
pub struct Namespaces {
    prefix: String,
    /// Host names in creation order (all of them exist).
    hosts: Vec<String>,
    addresses: BTreeMap<String, Ipv4Addr>,
}

impl Namespaces {
    /// No namespaces yet, under a new unique prefix for `tag`; first deletes the namespaces of
    /// dead processes for `tag`.
    fn new(tag: &str) -> io::Result<Namespaces> {
        delete_stale(tag)?;
        let n = NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed);
        Ok(Namespaces {
            prefix: format!("{}-{n}", process_prefix(tag)),
            hosts: Vec::new(),
            addresses: BTreeMap::new(),
        })
    }

    /// The namespace name of `host`; panics for a host this topology does not have.
    pub fn ns(&self, host: &str) -> String {
        assert!(
            self.hosts.iter().any(|h| h == host),
            "no host {host:?} in this topology (hosts: {:?})",
            self.hosts
        );
        format!("{}-{host}", self.prefix)
    }

    /// The first address given to `host`; panics when it has none.
    pub fn ip(&self, host: &str) -> Ipv4Addr {
        *self
            .addresses
            .get(host)
            .unwrap_or_else(|| panic!("host {host:?} has no address in this topology"))
    }

    /// `ip netns exec <ns> <program>`.
    pub fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.ns(host))
            .arg(program);
        command
    }

    /// Runs `args` in `host`'s namespace; its stdout.
    pub fn run(&self, host: &str, args: &[&str]) -> io::Result<String> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::other("run: no program given"))?;
        let mut command = self.command(host, program);
        command.args(rest);
        run_checked(&mut command)
    }

    /// Runs the command line `line` (split at whitespace) in `host`'s namespace.
    fn run_words(&self, host: &str, line: &str) -> io::Result<String> {
        self.run(host, &line.split_whitespace().collect::<Vec<_>>())
    }

    /// `ip -n <ns> <args>`, `args` split at whitespace.
    fn ip_cmd(&self, host: &str, args: &str) -> io::Result<String> {
        run_checked(
            Command::new("ip")
                .arg("-n")
                .arg(self.ns(host))
                .args(args.split_whitespace()),
        )
    }

    /// Creates `host`'s namespace with its loopback up.
    fn add(&mut self, host: &str) -> io::Result<()> {
        let name = format!("{}-{host}", self.prefix);
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        self.hosts.push(host.to_owned());
        self.ip_cmd(host, "link set lo up")?;
        Ok(())
    }

    /// Creates bridge `br0` in `host`, with `address` (CIDR) if given, and without IGMP
    /// snooping so multicast is flooded to every port whoever joined what.
    fn bridge(&mut self, host: &str, address: Option<&str>) -> io::Result<()> {
        self.ip_cmd(host, "link add br0 type bridge mcast_snooping 0")?;
        if let Some(address) = address {
            self.address(host, "br0", address)?;
        }
        self.ip_cmd(host, "link set br0 up")?;
        Ok(())
    }

    /// Plugs `host` into `switch`'s bridge `br0` with a veth pair: `interface` with `address`
    /// (CIDR) in `host`, the bridge port named `host` in `switch`.
    fn attach(
        &mut self,
        host: &str,
        interface: &str,
        switch: &str,
        address: &str,
    ) -> io::Result<()> {
        let peer_ns = self.ns(switch);
        self.ip_cmd(
            host,
            &format!("link add {interface} type veth peer name {host} netns {peer_ns}"),
        )?;
        self.ip_cmd(switch, &format!("link set {host} master br0 up"))?;
        self.address(host, interface, address)?;
        self.ip_cmd(host, &format!("link set {interface} up"))?;
        Ok(())
    }

    /// Adds `address` (CIDR) to `interface` of `host`, remembered as the host's address if it
    /// is the first.
    fn address(&mut self, host: &str, interface: &str, address: &str) -> io::Result<()> {
        self.ip_cmd(host, &format!("addr add {address} dev {interface}"))?;
        let ip = address.split('/').next().unwrap_or(address);
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| io::Error::other(format!("bad address {address:?}: {e}")))?;
        self.addresses.entry(host.to_owned()).or_insert(ip);
        Ok(())
    }

    /// Makes `router` a NAT router from `br0` (LAN) to `wan0` (WAN): forwarding on, NAT on
    /// `wan0`, LAN to WAN forwarded, only established/related traffic back in (to the LAN or
    /// the router itself). Bridged LAN traffic is kept out of iptables (`br_netfilter` would
    /// otherwise send it through the FORWARD policy DROP).
    fn nat(&self, router: &str, nat: NatKind) -> io::Result<()> {
        self.run_words(router, "sysctl -q -w net.ipv4.ip_forward=1")?;
        // `-e`: no such key when the kernel has no br_netfilter at all.
        self.run_words(
            router,
            "sysctl -q -e -w net.bridge.bridge-nf-call-iptables=0",
        )?;
        let masquerade = match nat {
            NatKind::Masquerade => "-t nat -A POSTROUTING -o wan0 -j MASQUERADE",
            NatKind::RandomFully => "-t nat -A POSTROUTING -o wan0 -j MASQUERADE --random-fully",
        };
        let established = "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT";
        let rules = [
            masquerade.to_owned(),
            "-P FORWARD DROP".to_owned(),
            "-A FORWARD -i br0 -o wan0 -j ACCEPT".to_owned(),
            format!("-A FORWARD -i wan0 -o br0 {established}"),
            format!("-A INPUT -i wan0 {established}"),
            "-A INPUT -i wan0 -j DROP".to_owned(),
        ];
        for rule in rules {
            self.run_words(router, &format!("iptables {rule}"))?;
        }
        Ok(())
    }

    /// Delays the packets leaving `interface` of `host` by `ms` milliseconds (`tc netem`).
    fn delay(&self, host: &str, interface: &str, ms: u32) -> io::Result<()> {
        let netem = format!("tc qdisc add dev {interface} root netem delay {ms}ms");
        self.run_words(host, &netem).map_err(|e| {
            let why = "kernel without sch_netem?";
            io::Error::other(format!(
                "netem delay on {host}/{interface} failed ({why}): {e}"
            ))
        })?;
        Ok(())
    }

    /// Limits the packets leaving `interface` of `host` to `mbit` Mbit/s with a token bucket
    /// (`tc qdisc replace … root tbf rate <mbit>mbit burst 256kb latency 50ms`), replacing any
    /// root qdisc the interface had, so it can be called again to change the rate.
    pub fn limit_rate(&self, host: &str, interface: &str, mbit: u64) -> io::Result<()> {
        let tbf = format!(
            "tc qdisc replace dev {interface} root tbf rate {mbit}mbit burst 256kb latency 50ms"
        );
        self.run_words(host, &tbf).map_err(|e| {
            let why = "kernel without sch_tbf?";
            io::Error::other(format!(
                "tbf rate limit on {host}/{interface} failed ({why}): {e}"
            ))
        })?;
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for host in self.hosts.iter().rev() {
            if let Err(e) = delete_namespace(&format!("{}-{host}", self.prefix)) {
                eprintln!("netns cleanup: {e}");
            }
        }
    }
}

/// Kills the processes left in namespace `name` (a test's nodes would otherwise keep it and
/// its interfaces alive, unnamed) and deletes it.
fn delete_namespace(name: &str) -> io::Result<()> {
    let pids = run_checked(Command::new("ip").args(["netns", "pids", name]))?;
    for pid in pids.split_whitespace() {
        // It may have exited meanwhile.
        let _ = Command::new("kill").args(["-KILL", pid]).output();
    }
    run_checked(Command::new("ip").args(["netns", "delete", name]))?;
    Ok(())
}

/// Deletes the `qs-<tag>-` namespaces whose creating process is gone.
fn delete_stale(tag: &str) -> io::Result<()> {
    let prefix = format!("qs-{}-", sanitize_tag(tag));
    for name in list_namespaces()? {
        let Some((pid, start)) = name.strip_prefix(&prefix).and_then(owner) else {
            continue;
        };
        if start_time(pid) != Some(start) {
            // Another process may be deleting it at the same time.
            if let Err(e) = delete_namespace(&name) {
                eprintln!("netns: stale namespace {name}: {e}");
            }
        }
    }
    Ok(())
}

/// The owner (pid, start time) in the rest `<pid>.<start>-<n>-<host>` of a namespace name.
fn owner(rest: &str) -> Option<(u32, u64)> {
    let (pid, rest) = rest.split_once('.')?;
    let (start, _) = rest.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// The start time of process `pid` (clock ticks since boot), `None` when it does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) is in parentheses and may contain anything.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The names in `ip netns list`.
fn list_namespaces() -> io::Result<Vec<String>> {
    let out = run_checked(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// `tag` reduced to at most 24 of `[A-Za-z0-9_]`, so `-` separates the name's fields.
fn sanitize_tag(tag: &str) -> String {
    tag.chars()
        .take(24)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Runs `command` to completion; its stdout, or an error with its stderr when it fails.
fn run_checked(command: &mut Command) -> io::Result<String> {
    let output = command
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {command:?}: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(io::Error::other(format!(
            "{command:?} failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Where `program` is in `PATH` (where `Command` looks for it).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is an executable file.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
