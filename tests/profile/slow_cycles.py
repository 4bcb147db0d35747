#!/usr/bin/env python3
"""Profiles the master's thread during a placement run and splits the samples by offer cycle.

Starts `berth serve --simulate-nodes 10000` (as the suite's placement part does), samples only the
`berth-master` thread with `perf record` on wall-clock timestamps, posts 100 Marathon apps of 1,000
instances from 4 clients, waits for every task to run, then matches each sample to the cycle it fell in
(`/v1/cycles`: start and duration). Prints, for the slowest cycles and some median ones, how many samples
each got per millisecond (the sampling rate when the thread was on CPU the whole cycle; fewer means it was
waiting for a core), then the leaf functions of the slowest cycles against those of the rest.

    python3 tests/profile/slow_cycles.py target/release/berth [--slowest 5] [--dwarf]

Needs `perf` and a release build. Wasm frames are named through BERTH_WASM_PROFILE=perfmap.
"""

import argparse
import bisect
import collections
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

FREQ = 2999


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("berth")
    parser.add_argument("--slowest", type=int, default=5)
    parser.add_argument("--dwarf", action="store_true", help="DWARF call graphs (deeper host stacks, slower)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="berth-slow-cycles-")
    data = os.path.join(work, "data")
    port = free_port()
    env = dict(os.environ, BERTH_LOG="warn", BERTH_WASM_PROFILE="perfmap")
    master = subprocess.Popen(
        [args.berth, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}", "--simulate-nodes", "10000",
         "--agent-ports", "31000-32000", "--agent-timeout-ms", "60000"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "master.log"), "w"))
    try:
        def request(method, path, body=None):
            token = open(os.path.join(data, "token")).read().strip()
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=body.encode() if body else None,
                                         headers={"authorization": "Bearer " + token,
                                                  "content-type": "application/json"})
            with urllib.request.urlopen(req) as resp:
                return json.loads(resp.read())

        deadline = time.time() + 300
        while True:
            try:
                if len(request("GET", "/v1/nodes")) >= 10000:
                    break
            except (OSError, ValueError):
                pass
            if time.time() > deadline:
                raise SystemExit("the simulated nodes did not join within 300 s")
            time.sleep(0.5)
        tid = next(t for t in os.listdir(f"/proc/{master.pid}/task")
                   if open(f"/proc/{master.pid}/task/{t}/comm").read().strip() == "berth-master")
        before = request("GET", "/v1/cycles")[-1]["number"]
        perf_data = os.path.join(work, "perf.data")
        graph = ["--call-graph", "dwarf,32768"] if args.dwarf else ["-g"]
        freq = 999 if args.dwarf else FREQ
        perf = subprocess.Popen(["perf", "record", "-k", "CLOCK_REALTIME", "-F", str(freq), *graph, "-t", tid,
                                 "-o", perf_data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        post_apps(request)
        while sum(a["tasksRunning"] for a in request("GET", "/v2/apps")["apps"]) < 100_000:
            time.sleep(0.2)
        perf.send_signal(2)
        perf.wait()
        cycles = [c for c in request("GET", "/v1/cycles")
                  if c["number"] > before and (c["launched"] > 0 or c["grants"] > 0)]
    finally:
        master.terminate()
        master.wait()
    script = subprocess.run(["perf", "script", "-i", perf_data, "-F", "time,ip,sym"] +
                            (["--no-inline"] if args.dwarf else []),
                            capture_output=True, text=True, check=True).stdout
    report(cycles, parse(script), args.slowest, freq)
    print(f"\nperf data and logs kept in {work}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_apps(request):
    next_app = iter(range(100))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next(next_app, None)
            if i is None:
                return
            app = {"id": f"/bench/app-{i:04}", "instances": 1000, "cpus": 0.1, "mem": 32, "cmd": "sleep 3600",
                   "container": {"docker": {"image": "bench:latest"}}}
            request("POST", "/v2/apps", json.dumps(app))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()


def parse(script):
    """(timestamp, [frame names, leaf first]) per sample."""
    samples, current = [], None
    for line in script.splitlines():
        m = re.match(r"^\s*(\d+\.\d+):", line)
        if m:
            current = (float(m.group(1)), [])
            samples.append(current)
            continue
        parts = line.split(None, 1)
        if current is not None and parts:
            current[1].append(re.sub(r"::h[0-9a-f]{16}", "", parts[1] if len(parts) > 1 else "?"))
    return samples


def report(cycles, samples, slowest, freq):
    cycles.sort(key=lambda c: c["at_ms"])
    starts = [c["at_ms"] / 1e3 for c in cycles]
    per_cycle = collections.defaultdict(list)
    for t, stack in samples:
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and stack and t <= starts[i] + cycles[i]["duration_us"] / 1e6:
            per_cycle[cycles[i]["number"]].append(stack)
    by_length = sorted(cycles, key=lambda c: -c["duration_us"])
    print(f"{len(cycles)} cycles that placed; sampling at {freq} Hz, so ~{freq / 1000:.1f} samples/ms on CPU")
    print("cycle   ms  launched  samples  per ms")
    middle = len(by_length) // 2
    for c in by_length[:max(slowest, 8)] + by_length[middle - 2:middle + 3]:
        n = len(per_cycle[c["number"]])
        ms = c["duration_us"] / 1e3
        print(f"{c['number']:5} {ms:5.1f} {c['launched']:9} {n:8} {n / ms:7.2f}")
    slow = {c["number"] for c in by_length[:slowest]}
    for name, numbers in (("slowest", slow), ("rest", set(per_cycle) - slow)):
        leaves = collections.Counter()
        total = 0
        for number in numbers:
            for stack in per_cycle[number]:
                total += 1
                leaves[" <- ".join(f[:60] for f in stack[:2])] += 1
        print(f"\n== {name}: {total} samples in {len(numbers)} cycles")
        for leaf, count in leaves.most_common(20):
            print(f"{100 * count / max(total, 1):5.1f}% {leaf}")


if __name__ == "__main__":
    main()
