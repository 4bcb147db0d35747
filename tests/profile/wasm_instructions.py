#!/usr/bin/env python3
"""Counts the instructions of the `proportional` allocator per call, per function, in wasm and natively.

Runs `allocator_ab` (the embedded component beside the same policy compiled natively) under callgrind,
which counts instructions rather than time, so the figures do not move with the machine's noise. The
plugin's compiled functions are named through BERTH_WASM_PROFILE=perfmap: wasmtime writes their addresses
to /tmp/perf-<pid>.map, and callgrind reports the same addresses. Prints the instructions per call of the
whole wasm call, of the guest's code and of the native policy, then the guest's functions and the native
policy's, each by its own (self) instructions. Each figure is of the timed calls alone: the script runs
the bench twice, with `--rounds` and with twice as many, and divides the difference by the calls it adds.

    python3 tests/profile/wasm_instructions.py <allocator_ab binary> [--nodes 1000] [--frameworks 100] \
        [--component other.wasm]

The binary is what `cargo bench -p berth-tests --bench allocator_ab --no-run` prints. Needs valgrind.
"""

import argparse
import bisect
import collections
import os
import re
import subprocess
import tempfile

HASH = re.compile(r"::h[0-9a-f]{16}$|17h[0-9a-f]{16}E.*$")
COST = re.compile(r"\s*([\d,]+) \([ \d.]+%\)\s+(\*|>)?\s*(.*)$")


def number(text):
    return int(text.replace(",", ""))


def perf_map(path):
    """(start, size, name) of each compiled function, sorted by address."""
    entries = []
    with open(path) as f:
        for line in f:
            start, size, name = line.rstrip("\n").split(" ", 2)
            entries.append((int(start, 16), int(size, 16), HASH.sub("", name)))
    return sorted(entries)


def annotate(out, *options):
    # Run from `/`: from inside the repository, callgrind_annotate shortens the paths under it and lists a
    # function's costs under more than one file, which splits its inclusive figure.
    return subprocess.run(
        ["callgrind_annotate", "--auto=no", *options, out], check=True, capture_output=True, text=True, cwd="/"
    ).stdout.splitlines()


def inclusive(lines, function, missing=None):
    """Inclusive instructions of `function` in a --tree=calling listing (the largest of its headings: code
    inlined from other files gets headings of its own). A function not in the listing (inlined into its
    caller, say) counts `missing`, or stops the script if that is None."""
    totals = [
        number(m.group(1))
        for m in map(COST.match, lines)
        if m and m.group(2) == "*" and f":{function} [" in m.group(3)
    ]
    if not totals:
        if missing is None:
            raise SystemExit(f"{function} is not in the profile")
        return missing
    return max(totals)


# Parts of the wasm call on the host's side, by the function that does each (inclusive).
HOST_PARTS = {
    "the view's delta": "berth_host::runtime::delta::HeldView::delta",
    "lowering it into the guest": "<(A1,) as wasmtime::runtime::component::func::typed::Lower>::linear_lower_to_memory",
    "checking the grant columns": "berth_host::runtime::bindings::Grants::from_columns",
}


def count(args, rounds):
    """One run of `allocator_ab` under callgrind with `rounds` timed rounds: the inclusive instructions of
    the wasm calls and of the native calls, and the self instructions of each guest and native function."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", args.binary,
             "--nodes", args.nodes, "--frameworks", args.frameworks, "--calls", args.calls,
             "--rounds", str(rounds), *([args.component] if args.component else [])],
            env={**os.environ, "BERTH_WASM_PROFILE": "perfmap"}, capture_output=True, text=True,
        )
        if run.returncode != 0:
            raise SystemExit(f"allocator_ab under callgrind failed:\n{run.stderr[-2000:]}")
        pid = re.search(r"==(\d+)==", run.stderr).group(1)
        map_path = f"/tmp/perf-{pid}.map"
        functions = perf_map(map_path)
        os.remove(map_path)
        tree = annotate(out, "--inclusive=yes", "--tree=calling", "--threshold=100")
        own = annotate(out, "--threshold=100")

    wasm = inclusive(tree, "berth_host::runtime::instance::AllocatorInstance::allocate_revised")
    native = inclusive(tree, "berth_plugin_proportional::policy::allocate")
    host = [inclusive(tree, function, missing=0) for function in HOST_PARTS.values()]
    starts = [f[0] for f in functions]
    guest = collections.Counter()
    native_own = collections.Counter()
    for line in own:
        m = COST.match(line)
        if not m or m.group(2):
            continue
        cost, rest = number(m.group(1)), m.group(3)
        address = re.match(r"\?\?\?:0x([0-9a-f]+) \[\?\?\?\]", rest)
        if address:
            at = int(address.group(1), 16)
            i = bisect.bisect_right(starts, at) - 1
            if i >= 0 and at < functions[i][0] + functions[i][1]:
                guest[functions[i][2]] += cost
        elif ":" in rest:
            # `file:function`, where code inlined from another file is listed under that file's name.
            function = rest.split(":", 1)[1].split(" [")[0]
            if re.match(r"berth_plugin_proportional::|berth_proto::ports::", function):
                native_own[function] += cost
    return wasm, native, guest, native_own, *host


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary")
    parser.add_argument("--nodes", default="1000")
    parser.add_argument("--frameworks", default="100")
    parser.add_argument("--calls", default="20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--component", help="a build of the component to count instead of the embedded one")
    args = parser.parse_args()

    # allocator_ab calls each side twice before it times them (the native policy to make the second view and
    # the expected grants, the component to check them: its first call sends the whole view, not a delta),
    # then `calls` times a round. Two runs, of `rounds` and of twice as many rounds: what the second counts
    # beyond the first is `calls` × `rounds` timed calls alone, without those first calls or the set-up.
    wasm, native, guest, native_own, *host = (
        b - a for a, b in zip(count(args, args.rounds), count(args, 2 * args.rounds))
    )
    calls = int(args.calls) * args.rounds

    print(f"{args.nodes} nodes × {args.frameworks} frameworks, instructions per call")
    print(f"  wasm call, all:    {wasm / calls / 1e6:8.2f} M ({calls} timed calls a side)")
    print(f"  the guest's code:  {sum(guest.values()) / calls / 1e6:8.2f} M")
    print(f"  native policy:     {native / calls / 1e6:8.2f} M")
    print(f"  wasm / native:     {wasm / calls / (native / calls):8.2f}×")
    print("the host's side of the wasm call, parts of it (lowering includes the guest's realloc; 0: inlined):")
    for name, cost in zip(HOST_PARTS, host):
        print(f"  {cost / calls / 1e6:8.2f} M  {name}")
    print("the guest's functions (self):")
    for name, cost in guest.most_common(args.top):
        print(f"  {cost / calls / 1e3:9.1f} k  {name[:110]}")
    # berth_proto::ports is counted wherever it runs natively: `split_bounds` there is the host reading the
    # wasm call's grant columns, not the native policy.
    print("the native policy's functions (self; the memory allocator is not among them; ports:: also the host's):")
    for name, cost in native_own.most_common(args.top):
        print(f"  {cost / calls / 1e3:9.1f} k  {name[:110]}")


if __name__ == "__main__":
    main()
