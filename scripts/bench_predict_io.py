#!/usr/bin/env python3
"""Whole-process `rankseg predict` against numpy's load + argmax, in one run.

    /tmp/venv/bin/python scripts/bench_predict_io.py [--bin target/release/rankseg]
        [--out results/bench/predict_io] [--repeats 7] [--maps blocky,fine]
        [--rankseg-repeats 1] [--work DIR] [--keep]

Inputs (float32, 1x150x512x512 = 157 MB, ADE20K size), written once to --work:
  blocky: softmax over classes of 3 x N(0, 1) logits drawn at 64x64 and upsampled 8x by
          nearest neighbour, so every probability occurs in 8x8 blocks (exact ties: the case
          that used to make RMA slow);
  fine:   the same without the upsampling (no ties).
Each map is read once before timing (page cache warm). Then, --repeats rounds, each running
in turn (interleaved, so load from other processes hits all alike; medians reported):
  ours argmax:     BIN predict --solver argmax --probs MAP --out OUT  (a new process)
  ours rma:        BIN predict --solver rma ...  (Dice, multiclass, rankseg's defaults)
  numpy process:   python -c "np.save(OUT, np.load(MAP).argmax(1))"  (a new process)
  numpy in-process: np.load(MAP).argmax(1) timed inside this script (no interpreter start,
                   no save: the stricter baseline the target is set against)
  before argmax / before rma (with --before BIN): the same commands with another build.
Peak memory of a process is its ru_maxrss as os.wait4 reports it (the kernel's own count,
no extra tool), taken by a small interpreter that forks the command (see MEASURE). With --rankseg-repeats N > 0 (default 1), rankseg 0.0.8 (torch CPU, this
interpreter) also runs RMA and argmax in-process on each map, and our outputs are checked
against it (RMA class maps bit-identical) and against numpy (argmax).

Writes OUT/predict_io.md, .csv, .json (atomically); the first line names the machine
(lscpu model, cores) and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil  # noqa: E402

SHAPE = (1, 150, 512, 512)


def make_map(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factor = {"blocky": 8, "fine": 1}[kind]
    b, c, h, w = SHAPE
    logits = 3.0 * rng.standard_normal((b, c, h // factor, w // factor), dtype=np.float32)
    logits = logits.repeat(factor, axis=2).repeat(factor, axis=3)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return np.ascontiguousarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)


# Runs one command from a fresh, small interpreter and reports its wall time, ru_maxrss and
# exit code. A child forked straight from this script would start as a copy of it (the maps
# it holds), and Linux's ru_maxrss keeps that high-water mark across exec.
MEASURE = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_process(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one child process; a failure stops the run."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 3 or fields[2] != "0":
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return float(fields[0]), int(fields[1]) / 1024.0


def numpy_in_process(path: str) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    labels = np.load(path).argmax(1)
    return time.perf_counter() - start, labels


def lscpu_machine() -> str:
    fields = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    model = fields.get("Model name") or benchutil.cpu_model()
    cpus = fields.get("CPU(s)") or str(os.cpu_count())
    return f"{model}, {cpus} CPUs ({benchutil.available_cpus()} usable)"


def rankseg_run(path: str, solver: str, repeats: int):
    """(median seconds, output) of rankseg 0.0.8 on the map, in this process."""
    import torch
    from rankseg import RankSEG

    torch.set_num_threads(benchutil.available_cpus())
    seg = RankSEG(metric="dice", solver=solver, output_mode="multiclass")
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        probs = torch.from_numpy(np.load(path))
        out = seg.predict(probs) if solver != "argmax" else probs.argmax(1)
        times.append(time.perf_counter() - start)
    return statistics.median(times), np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join("target", "release", "rankseg"))
    ap.add_argument("--before", default=None,
                    help="another build of the binary (e.g. the previous commit's) timed in the same "
                         "rounds as 'before argmax' / 'before rma'")
    ap.add_argument("--out", default=os.path.join("results", "bench", "predict_io"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--maps", default="blocky,fine")
    ap.add_argument("--rankseg-repeats", type=int, default=1)
    ap.add_argument("--work", default=None, help="folder for the inputs (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the inputs and outputs in --work")
    args = ap.parse_args()
    maps = [m.strip() for m in args.maps.split(",") if m.strip()]
    work = args.work or tempfile.mkdtemp(prefix="predict_io-")
    os.makedirs(work, exist_ok=True)
    load_before = os.getloadavg()

    rows, details = [], {}
    for kind in maps:
        path = os.path.join(work, f"{kind}.npy")
        if not os.path.exists(path):
            np.save(path, make_map(kind))
        input_mib = os.path.getsize(path) / 2**20
        numpy_in_process(path)  # page cache warm, numpy's pages touched once
        outs = {m: os.path.join(work, f"{kind}_{m}.npy") for m in ("argmax", "rma", "numpy")}
        commands = {
            "ours argmax": [args.bin, "predict", "--solver", "argmax", "--probs", path,
                            "--out", outs["argmax"]],
            "ours rma": [args.bin, "predict", "--solver", "rma", "--probs", path,
                         "--out", outs["rma"]],
            **({} if not args.before else {
                "before argmax": [args.before, "predict", "--solver", "argmax", "--probs", path,
                                  "--out", outs["argmax"] + ".before.npy"],
                "before rma": [args.before, "predict", "--solver", "rma", "--probs", path,
                               "--out", outs["rma"] + ".before.npy"],
            }),
            "numpy process": [sys.executable, "-c",
                              "import sys, numpy as np; "
                              "np.save(sys.argv[2], np.load(sys.argv[1]).argmax(1))",
                              path, outs["numpy"]],
        }
        times = {name: [] for name in [*commands, "numpy in-process"]}
        rss = {name: [] for name in commands}
        reference = None
        for name, cmd in commands.items():  # warm-up round, untimed
            run_process(cmd)
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                seconds, peak = run_process(cmd)
                times[name].append(seconds)
                rss[name].append(peak)
            seconds, reference = numpy_in_process(path)
            times["numpy in-process"].append(seconds)

        checks = {"argmax == numpy": bool(np.array_equal(np.load(outs["argmax"]), reference))}
        if args.before:
            for m in ("argmax", "rma"):
                same = np.array_equal(np.load(outs[m]), np.load(outs[m] + ".before.npy"))
                checks[f"{m} == before"] = bool(same)
        if args.rankseg_repeats > 0:
            for solver in ("argmax", "RMA"):
                seconds, out = rankseg_run(path, solver, args.rankseg_repeats)
                times[f"rankseg 0.0.8 {solver.lower()} (in-process)"] = [seconds]
                ours = np.load(outs["rma" if solver == "RMA" else "argmax"])
                checks[f"{solver.lower()} == rankseg 0.0.8"] = bool(np.array_equal(ours, out))

        med = {name: statistics.median(v) for name, v in times.items()}
        for name, v in times.items():
            peak = max(rss[name]) if name in rss else None
            rows.append({
                "map": kind,
                "run": name,
                "median_s": med[name],
                "min_s": min(v),
                "runs": len(v),
                "vs_numpy": med[name] / med["numpy in-process"],
                "vs_argmax": med[name] / med["ours argmax"],
                "peak_rss_mib": peak,
                "rss_vs_input": None if peak is None else peak / input_mib,
            })
        details[kind] = {"times": times, "rss_mib": rss, "input_mib": input_mib, "checks": checks}
        print(kind, {k: round(v, 4) for k, v in med.items()}, checks, flush=True)
        if not args.keep:
            for p in [path, *outs.values(), *(o + ".before.npy" for o in outs.values())]:
                if os.path.exists(p):
                    os.remove(p)

    load_after = os.getloadavg()
    machine = (f"{lscpu_machine()}; load average {load_before[0]:.2f} before, "
               f"{load_after[0]:.2f} after; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    checks = "; ".join(f"{kind}: " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                               for k, v in d["checks"].items())
                       for kind, d in details.items())
    intro = (f"1x150x512x512 float32 maps ({details[maps[0]]['input_mib']:.0f} MiB), page cache "
             f"warm. Median of {args.repeats} interleaved rounds (one untimed warm-up); each "
             f"`ours` and `numpy process` run is a whole new process; peak RSS is the largest "
             f"ru_maxrss over the rounds. vs_numpy = median / numpy in-process (np.load + "
             f"argmax(1)); vs_argmax = median / ours argmax. Outputs checked: {checks}.")
    columns = [
        ("map", "map", None, "map", None),
        ("run", "run", None, "run", None),
        ("median_s", "median_s", ".4f", "median_s", ".6f"),
        ("min_s", "min_s", ".4f", "min_s", ".6f"),
        ("runs", "runs", "d", "runs", "d"),
        ("vs_numpy", "vs_numpy", ".2f", "vs_numpy", ".4f"),
        ("vs_argmax", "vs_argmax", ".2f", "vs_argmax", ".4f"),
        ("peak_rss_mib", "peak_rss_MiB", ".0f", "peak_rss_mib", ".1f"),
        ("rss_vs_input", "rss_vs_input", ".2f", "rss_vs_input", ".4f"),
    ]
    meta = {"bin": args.bin, "before": args.before, "repeats": args.repeats, "shape": SHAPE, "machine": machine}
    benchutil.write_results(args.out, "predict_io", machine, intro, columns, rows, meta, details)


if __name__ == "__main__":
    main()
