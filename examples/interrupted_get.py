#!/usr/bin/env python3
"""An interrupted get, rerun (issue 17): four release nodes on loopback (data in /dev/shm),
a file of MIB MiB (default 1024) put on three of them, then a get through the fourth that is
interrupted once its resume record lists half the file verified, by SIGINT and then, in a
second round, by kill -9; the same get runs again each time. Prints the bytes the holders
sent in each run (their file_bytes_sent counters) against the file's size, and whether the
result is byte-identical.

    cargo build --release --bin quickstore && python3 examples/interrupted_get.py
"""
import glob, json, os, re, shutil, signal, subprocess, sys, time
B = os.environ.get("QS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "quickstore"))
D = "/dev/shm/qsi"
SIZE = int(os.environ.get("MIB", "1024")) << 20
shutil.rmtree(D, ignore_errors=True); os.makedirs(D); os.chdir(D)
nodes = []
def start(i, boot=None):
    args = [B, "node", "--data-dir", f"n{i}", "--network", "qsint", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]
    if boot: args += ["--bootstrap", boot]
    log = open(f"n{i}.log", "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    nodes.append(p)
    for _ in range(100):
        time.sleep(0.1)
        m = re.search(r"/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+", open(f"n{i}.log").read())
        if m: return m.group(0)
    sys.exit("no address")
a = start(1)
for i in (2, 3, 4): start(i, a)
time.sleep(5)
with open("src.bin", "wb") as f:
    x = os.urandom(1 << 20)
    for i in range(SIZE >> 20):
        f.write(x[i % 7:] + x[:i % 7])
run = lambda *a: subprocess.run([B, *a], capture_output=True, text=True)
r = run("put", "src.bin", "big", "--data-dir", "n1", "--json")
print("put", r.stdout.strip()[:200], r.stderr[-300:])
holders = json.loads(r.stdout)["holders"]
def sent():
    total = 0
    for i in (1, 2, 3, 4):
        s = run("status", "--data-dir", f"n{i}", "--json")
        total += json.loads(s.stdout)["counters"].get("file_bytes_sent", 0)
    return total
entry = "n4"
for sig in (signal.SIGINT, signal.SIGKILL):
    for f in glob.glob(".out.bin*") + glob.glob("out.bin"):
        os.remove(f)
    before = sent()
    p = subprocess.Popen([B, "get", "big", "-o", "out.bin", "--data-dir", entry, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = 0
    while p.poll() is None:
        recs = glob.glob(".out.bin.quickstore-resume-*.part.ranges")
        if recs:
            try:
                done = sum(e - s for s, e in json.load(open(recs[0]))["verified"])
            except Exception:
                pass
        if done >= SIZE // 2:
            p.send_signal(sig); break
        time.sleep(0.005)
    p.wait()
    mid = sent()
    r = run("get", "big", "-o", "out.bin", "--data-dir", entry, "--json")
    after = sent()
    j = json.loads(r.stdout)
    same = subprocess.run(["cmp", "src.bin", "out.bin"]).returncode == 0
    first, second = mid - before, after - mid
    sources = len([s for s in j["sources"] if s["bytes"] > 0])
    extra = first + second - SIZE
    print(f"{signal.Signals(sig).name}: recorded at interrupt {done>>20} MiB; first run sent {first/2**20:.1f} MiB, "
          f"rerun sent {second/2**20:.1f} MiB (resumed {j['resumed_bytes']/2**20:.1f} MiB, from {sources} holders); "
          f"sent beyond the file {extra/2**20:.1f} MiB = {extra/2**20/sources:.2f} MiB per holder; identical {same}; rerun {j['elapsed_ms']} ms")
for p in nodes: p.send_signal(signal.SIGINT)
for p in nodes: p.wait()
shutil.rmtree(D, ignore_errors=True)
