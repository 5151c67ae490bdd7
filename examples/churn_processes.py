#!/usr/bin/env python3
"""Churn on real processes (issue 14's fault run, as a user would see it).

N `quickstore node` processes of one group (k = 1) on loopback, FILES files put, then every
PERIOD seconds a random node is kill -9'd and restarted with its data directory after a random
downtime of 1-8 s (with PAUSE=1, half of the events are a SIGSTOP of 1-10 s instead). After
DURATION seconds and 30 s of quiet it counts the holder sets any node published smaller than
before and below R = 3 (log lines "N holders listed, M after repair"), checks that every file
is listed with 3 holders that have its bytes on disk, and gets each file.

    cargo build --release
    python3 examples/churn_processes.py target/release/quickstore
    PAUSE=1 python3 examples/churn_processes.py target/release/quickstore

Environment: N (10), FILES (30), PERIOD (6 s), DURATION (240 s), PAUSE (0). The protocol
periods are short (t_fail 3 s, repair every 1 s, orphan grace 10 s) so that a wrong shrink or
deletion shows within minutes. Needs python3 only; the run directory is /tmp/qs/churn-run."""
import json, os, random, re, shutil, signal, subprocess, sys, time

BIN = sys.argv[1]
N = int(os.environ.get("N", 10)); FILES = int(os.environ.get("FILES", 30))
PERIOD = float(os.environ.get("PERIOD", 6)); DURATION = float(os.environ.get("DURATION", 240))
PAUSE = os.environ.get("PAUSE", "0") == "1"
root = "/tmp/qs/churn-run"; shutil.rmtree(root, ignore_errors=True); os.makedirs(root)
random.seed(int(os.environ.get("SEED", 1)))
cfg = os.path.join(root, "config.toml")
open(cfg, "w").write("""
[node]
listen = ["/ip4/127.0.0.1/tcp/0"]
backoff_ms = 300
[kelips]
network_name = "churn"
groups = 1
heartbeat_period_ms = 200
gossip_period_ms = 200
t_fail_ms = 3000
t_contact_ms = 12000
sync_period_ms = 2000
rejoin_period_ms = 4000
request_timeout_ms = 1000
[files]
io_timeout_ms = 10000
put_deadline_ms = 30000
repair_period_ms = 1000
orphan_grace_ms = 10000
""")
procs = [None] * N; addrs = [None] * N
def start(i, boot):
    d = os.path.join(root, f"n{i}"); os.makedirs(d, exist_ok=True)
    args = [BIN, "node", "--data-dir", d, "--config", cfg, "--no-mdns"]
    for b in boot: args += ["--bootstrap", b]
    log = open(os.path.join(d, "log"), "a")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"))
    line = p.stdout.readline().decode()
    assert line.startswith("listening on"), line
    procs[i] = p; addrs[i] = line.split()[-1]
def running(): return [i for i in range(N) if procs[i] is not None]
def cli(*args, stdin=None):
    r = subprocess.run([BIN, *args], capture_output=True, cwd=root, input=stdin, env=dict(os.environ, RUST_LOG="warn"))
    return r
start(0, [])
for i in range(1, N): start(i, [addrs[0]])
time.sleep(12)
names = {}
for f in range(FILES):
    data = os.urandom(random.randint(100_000, 2_000_000))
    path = os.path.join(root, f"src{f}"); open(path, "wb").write(data)
    r = cli("put", path, f"file-{f}", "--json", "--peer", addrs[random.choice(running())])
    if r.returncode != 0: print("put failed", r.stderr.decode()); continue
    j = json.loads(r.stdout); names[f"file-{f}"] = j["blake3"]
print(f"{len(names)} files put", flush=True)
end = time.time() + DURATION; kills = 0; pauses = 0
while time.time() < end:
    time.sleep(PERIOD)
    i = random.choice(running())
    if PAUSE and random.random() < 0.5:
        procs[i].send_signal(signal.SIGSTOP); time.sleep(random.uniform(1, 10)); procs[i].send_signal(signal.SIGCONT)
        pauses += 1
        continue
    procs[i].kill(); procs[i].wait(); procs[i] = None; kills += 1
    time.sleep(random.uniform(1, 8))
    start(i, [addrs[random.choice(running())]])
print(f"{kills} kills, {pauses} pauses; settling", flush=True)
time.sleep(30)
shrinks = []; deletions = 0
pat = re.compile(r'(\d+) holders listed, (\d+) after repair')
for i in range(N):
    for line in open(os.path.join(root, f"n{i}", "log"), errors="replace"):
        m = pat.search(line)
        if m and int(m.group(2)) < int(m.group(1)) and int(m.group(2)) < 3: shrinks.append((i, line.strip()[-120:]))
        if "deleting blob" in line: deletions += 1
print("holder sets shrunk below R:", len(shrinks)); [print("  ", s) for s in shrinks[:10]]
print("blob deletions:", deletions)
ls = json.loads(cli("ls", "--json", "--peer", addrs[0]).stdout)
by = {n["name"]: n for n in ls.get("names", [])}
bad = 0; got = 0
for name, b3 in names.items():
    n = by.get(name)
    holders = n["holders"] if n else []
    ids = [re.search(r"/p2p/(\w+)", addrs[i]).group(1) for i in range(N)]
    on_disk = [h for h in holders if h in ids and os.path.isfile(os.path.join(root, f"n{ids.index(h)}", "blobs", b3[:2], b3))]
    if len(holders) != 3 or len(on_disk) != 3:
        bad += 1; print("  ", name, len(holders), "listed,", len(on_disk), "with the bytes")
    r = cli("get", name, "-o", "-", "--peer", addrs[random.choice(running())])
    if r.returncode == 0:
        got += 1
    else:
        print("  get", name, r.stderr.decode()[-200:])
copies = sum(1 for i in range(N) for b3 in names.values() if os.path.isfile(os.path.join(root, f"n{i}", "blobs", b3[:2], b3)))
print(f"files listed wrong: {bad}; gets ok: {got}/{len(names)}; copies on disk: {copies} (R x files = {3*len(names)})")
for p in procs:
    if p: p.kill()
sys.exit(1 if shrinks or bad or got != len(names) else 0)
