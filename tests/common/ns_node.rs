//! `quickstore` processes inside network namespaces (see [`super::netns`]): a node started
//! with a command that enters the namespace, and client commands run beside it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use quickstore::status::Status;

use super::Proc;

/// The quickstore binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_quickstore");

/// Starts `proc` as `quickstore node` through `cmd` (`quickstore` itself, or e.g.
/// `ip netns exec NS quickstore`) with `config` and `extra` flags; returns its first line
/// (`listening on …`) once it prints it. Its log is appended to `proc.log()`.
pub fn launch(mut cmd: Command, proc: &mut Proc, config: &Path, extra: &[&str]) -> String {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(proc.log())
        .expect("log file");
    cmd.arg("node")
        .arg("--data-dir")
        .arg(&proc.dir)
        .arg("--config")
        .arg(config)
        .args(extra)
        .env(
            "RUST_LOG",
            "info,libp2p_dcutr=debug,libp2p_relay=debug,libp2p_mdns=debug",
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = cmd.spawn().expect("quickstore node starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reads the first line");
    assert!(line.starts_with("listening on"), "{:?}: {line:?}", proc.dir);
    proc.child = Some(child);
    line
}

/// Runs `quickstore ARGS --data-dir DIR` through `cmd` (a client of the node in `dir`).
pub fn client(mut cmd: Command, dir: &Path, args: &[&str]) -> Output {
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd.output().expect("the client runs")
}

/// The status of the node in `dir`, asked through `cmd`; None when it does not answer.
pub fn status(cmd: Command, dir: &Path) -> Option<Status> {
    let out = client(cmd, dir, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).ok()
}

/// Stops every process and copies its log to `$TMPDIR/quickstore-<name>-logs/<host>.log`.
pub fn stop_and_keep_logs<'a>(name: &str, procs: impl Iterator<Item = (&'a str, &'a mut Proc)>) {
    let target = std::env::temp_dir().join(format!("quickstore-{name}-logs"));
    let _ = std::fs::create_dir_all(&target);
    for (host, proc) in procs {
        if let Some(mut child) = proc.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::copy(proc.log(), target.join(format!("{host}.log")));
    }
    println!("logs in {}", target.display());
}
