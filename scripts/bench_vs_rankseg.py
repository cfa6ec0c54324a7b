#!/usr/bin/env python3
"""Time rankseg 0.0.8 (PyPI, torch CPU) against this project's binary on the same inputs.

    /tmp/venv/bin/python scripts/bench_vs_rankseg.py [--bin target/release/rankseg]
        [--out results/bench] [--repeats 3] [--quick] [--sizes voc,binary]
        [--methods argmax,...,ba_trna] [--max-seconds 120]

1. Runs `BIN bench --dump-inputs DIR --json FILE [--quick]`: the binary writes the
   seeded inputs it benchmarks as DIR/<size>.npy (float32, C-order) and its own
   timings as a JSON list of {"size", "method", "seconds" (median)}, methods
   argmax, threshold, rma_dice, rma_iou, and ba, trna, ba_trna (sizes voc and binary only).
2. Times the same arrays with torch / rankseg (torch.set_num_threads(cores)):
   argmax -> torch.argmax(p, dim=1); threshold -> p > 0.5;
   rma_dice / rma_iou -> RankSEG(metric=dice|iou, solver='RMA', output_mode='multiclass');
   ba / trna / ba_trna -> RankSEG(metric='dice', solver='BA'|'TRNA'|'BA+TRNA',
   output_mode='multilabel').  Only (size, method) pairs the binary reported are timed
   (the rest are skipped), and only the methods in --methods.
   Median of --repeats runs.  A first run shorter than 1 s is treated as warm-up and
   discarded; a longer one counts as the first repeat.  A first run longer than
   --max-seconds (default 120) is not repeated: that single time is reported and marked
   "(>S s, 1 run)" in bench.md (listed in a trailing comment in bench.csv).  rankseg's
   TRNA loops in Python over every candidate volume (about 30 s for a 1x21x96x96 map on
   2 cores, growing roughly as (H*W)^1.5: most of an hour is plausible at voc size); the
   cap cannot stop that first run, so leave trna out of --methods to skip it.
3. Writes OUT/bench.csv, OUT/bench.md (and OUT/bench.json with every raw time),
   each atomically (temporary file + os.replace).  Columns: size, method, ours_s,
   rankseg_s, speedup (= rankseg_s / ours_s), ours_vs_argmax (= ours_s / ours argmax_s
   of the same size).  The first line names the machine (CPU model, cores, date).

Testing without the binary: --ours-json FILE --inputs DIR uses an existing timing
file and dumped arrays instead of running the binary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchutil import available_cpus, cpu_model, write_text_atomic

METHODS = ("argmax", "threshold", "rma_dice", "rma_iou", "ba", "trna", "ba_trna")
SIZE_ORDER = ("voc", "ade20k", "cityscapes", "binary", "voc_small", "binary_small")


# ----------------------------------------------------------------------------- machine
def machine_line(threads):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"machine: {cpu_model()}; nproc {available_cpus()}; torch threads {threads}; {now}"


# ----------------------------------------------------------------------------- io
def load_ours(path):
    with open(path) as f:
        rows = json.load(f)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of {{size, method, seconds}}")
    ours = {}
    for r in rows:
        try:
            ours[(str(r["size"]), str(r["method"]))] = float(r["seconds"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad row {r!r}") from e
    return ours


def size_key(name):
    return (SIZE_ORDER.index(name) if name in SIZE_ORDER else len(SIZE_ORDER), name)


# ----------------------------------------------------------------------------- timing
def make_runners():
    import torch
    from rankseg import RankSEG

    dice = RankSEG(metric="dice", solver="RMA", output_mode="multiclass")
    iou = RankSEG(metric="iou", solver="RMA", output_mode="multiclass")
    rankdice = {m: RankSEG(metric="dice", solver=s, output_mode="multilabel")
                for m, s in (("ba", "BA"), ("trna", "TRNA"), ("ba_trna", "BA+TRNA"))}
    return {
        "argmax": lambda t: torch.argmax(t, dim=1),
        "threshold": lambda t: t > 0.5,
        "rma_dice": dice.predict,
        "rma_iou": iou.predict,
        **{m: r.predict for m, r in rankdice.items()},
    }


def time_one(fn, arg, repeats, max_seconds=None):
    """Median wall time of `repeats` calls (a first call under 1 s is a discarded warm-up).

    Returns (median, times, capped): when the first call takes longer than `max_seconds`
    it is not repeated and capped is True (times holds that single run)."""
    times = []
    t0 = time.perf_counter()
    out = fn(arg)
    first = time.perf_counter() - t0
    del out
    if max_seconds is not None and first > max_seconds:
        return first, [first], True
    if first >= 1.0:
        times.append(first)
    while len(times) < repeats:
        t0 = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times), times, False


def time_rankseg(inputs, sizes, repeats, methods=METHODS, log=print, max_seconds=None,
                 wanted=None):
    """Time rankseg on each size's array. `wanted(size, method)` (default: all) filters the
    pairs; returns (medians, raw times, capped) keyed by (size, method), capped a set."""
    import torch

    runners = make_runners()
    res, raw, capped = {}, {}, set()
    for size in sizes:
        todo = [m for m in methods if wanted is None or wanted(size, m)]
        if not todo:
            continue
        arr = np.load(inputs[size], allow_pickle=False)
        if arr.dtype != np.float32 or not arr.flags.c_contiguous:
            log(f"warning: {size}: dtype {arr.dtype}, C-order {arr.flags.c_contiguous}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
        for m in todo:
            log(f"rankseg {size:>11} {list(arr.shape)} {m:>9}: running ...", flush=True)
            with torch.no_grad():
                med, times, over = time_one(runners[m], t, repeats, max_seconds)
            res[(size, m)] = med
            raw[(size, m)] = times
            if over:
                capped.add((size, m))
            log(f"rankseg {size:>11} {list(arr.shape)} {m:>9}: median {med:.4f} s "
                f"({', '.join(f'{x:.4f}' for x in times)})"
                + (f" [single run, over --max-seconds {max_seconds:g}]" if over else ""),
                flush=True)
        del t, arr
    return res, raw, capped


# ----------------------------------------------------------------------------- report
def fmt(x, digits=4):
    if x is None:
        return ""
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.0f}"


def build_rows(ours, theirs, sizes, capped=frozenset()):
    """One row per (size, method) with a time on either side; `capped` marks rankseg
    times that are a single run over --max-seconds (row["rankseg_capped"])."""
    rows = []
    for size in sizes:
        base = ours.get((size, "argmax"))
        extra = sorted({m for (s, m) in list(ours) + list(theirs) if s == size} - set(METHODS))
        for m in list(METHODS) + extra:
            o = ours.get((size, m))
            r = theirs.get((size, m))
            if o is None and r is None:
                continue
            rows.append({
                "size": size,
                "method": m,
                "ours_s": o,
                "rankseg_s": r,
                "speedup": (r / o) if (o and r is not None) else None,
                "ours_vs_argmax": (o / base) if (o is not None and base) else None,
                "rankseg_capped": (size, m) in capped,
            })
    return rows


COLS = ("size", "method", "ours_s", "rankseg_s", "speedup", "ours_vs_argmax")


def render_csv(rows, header, max_seconds=None):
    lines = [f"# {header}", ",".join(COLS)]
    for r in rows:
        lines.append(",".join(r[c] if c in ("size", "method") else
                              ("" if r[c] is None else repr(float(r[c]))) for c in COLS))
    capped = [f"{r['size']}/{r['method']}" for r in rows if r.get("rankseg_capped")]
    if capped:
        lines.append(f"# rankseg_s is one run over --max-seconds {max_seconds:g} (not repeated) "
                     f"for: {' '.join(capped)}")
    return "\n".join(lines) + "\n"


def rankseg_cell(r, max_seconds=None):
    if r["rankseg_s"] is None:
        return ""
    cell = fmt(r["rankseg_s"])
    if r.get("rankseg_capped"):
        cell += f" (>{max_seconds:g} s, 1 run)"
    return cell


def render_md(rows, header, shapes, notes, max_seconds=None):
    out = ["# rankseg (Rust) vs rankseg 0.0.8 (PyPI, torch CPU)", "", header, ""]
    if shapes:
        out.append("Inputs: " + "; ".join(f"{s} {shapes[s]}" for s in shapes) + ".")
        out.append("")
    out.append("| " + " | ".join(COLS) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["---:"] * 4) + "|")
    for r in rows:
        cells = [r["size"], r["method"], fmt(r["ours_s"]), rankseg_cell(r, max_seconds),
                 (fmt(r["speedup"], 3) + "x") if r["speedup"] is not None else "",
                 fmt(r["ours_vs_argmax"], 3) if r["ours_vs_argmax"] is not None else ""]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Times are medians in seconds. speedup = rankseg_s / ours_s; "
               "ours_vs_argmax = ours_s / ours argmax_s for the same size.")
    if any(r.get("rankseg_capped") for r in rows):
        out.append(f"`(>{max_seconds:g} s, 1 run)`: rankseg's first run took longer than "
                   f"--max-seconds {max_seconds:g}, so it was not repeated; the time shown is "
                   "that single run (and the speedup uses it).")
    out.extend(notes)
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/rankseg", help="the project's binary")
    ap.add_argument("--out", default="results/bench", help="output folder")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="pass --quick to the binary")
    ap.add_argument("--ours-repeats", type=int, default=15, help="timed runs per method on the Rust side")
    ap.add_argument("--sizes", default=None,
                    help="comma-separated size names to report (default: every size the binary dumped)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated rankseg methods to time (default: all of "
                         f"{','.join(METHODS)}; methods the binary did not report are skipped)")
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="a rankseg method whose first run takes longer than this is not repeated; "
                         "its single time is reported with a '>' note (default 120)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--ours-json", default=None, help="use this timing JSON instead of running the binary")
    ap.add_argument("--inputs", default=None, help="folder of <size>.npy (with --ours-json)")
    ap.add_argument("--keep-inputs", action="store_true", help="keep the dumped arrays under OUT/inputs")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if not args.max_seconds > 0:
        ap.error("--max-seconds must be > 0")
    if (args.ours_json is None) != (args.inputs is None):
        ap.error("--ours-json and --inputs go together")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)
    os.makedirs(args.out, exist_ok=True)
    notes = []

    cleanup = None
    if args.ours_json:
        ours_json, inputs_dir = args.ours_json, args.inputs
    else:
        if not os.path.isfile(args.bin):
            sys.exit(f"error: binary {args.bin} not found (cargo build --release first)")
        if args.keep_inputs:
            inputs_dir = os.path.join(args.out, "inputs")
            shutil.rmtree(inputs_dir, ignore_errors=True)
            os.makedirs(inputs_dir)
        else:
            inputs_dir = tempfile.mkdtemp(prefix="rankseg-bench-inputs-")
            cleanup = inputs_dir
        ours_json = os.path.join(inputs_dir, "ours.json")
        cmd = [args.bin, "bench", "--dump-inputs", inputs_dir, "--json", ours_json]
        if args.quick:
            cmd.append("--quick")
        if args.sizes:
            cmd += ["--sizes", args.sizes]
        # Our side is cheap to repeat: more runs make its median robust to the noise of a
        # shared machine.
        # argmax always: it is the reference of the ours_vs_argmax column.
        ours_methods = sorted({m.strip() for m in args.methods.split(",") if m.strip()} | {"argmax"})
        cmd += ["--repeats", str(args.ours_repeats), "--methods", ",".join(ours_methods)]
        print("running:", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} exited with {proc.returncode}")
        print(f"binary done in {time.perf_counter() - t0:.1f} s", flush=True)

    try:
        ours = load_ours(ours_json)
        dumped = {f[:-4]: os.path.join(inputs_dir, f) for f in os.listdir(inputs_dir) if f.endswith(".npy")}
        if args.sizes:
            sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
            missing = [s for s in sizes if s not in dumped]
            if missing:
                sys.exit(f"error: sizes {missing} were not dumped (have {sorted(dumped)})")
        else:
            sizes = sorted(dumped, key=size_key)
        no_json = [s for s in sizes if not any(k[0] == s for k in ours)]
        if no_json:
            notes.append(f"Note: the binary reported no timings for {no_json}.")
        undumped = sorted({k[0] for k in ours} - set(dumped))
        if undumped:
            notes.append(f"Note: the binary timed sizes {undumped} but dumped no input for them.")
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        bad = sorted(set(methods) - set(METHODS))
        if bad:
            sys.exit(f"error: unknown methods {bad}")
        shapes = {}
        for s in sizes:
            a = np.load(dumped[s], mmap_mode="r")
            shapes[s] = "x".join(map(str, a.shape))
        skipped = [f"{s}/{m}" for s in sizes for m in methods if (s, m) not in ours]
        if skipped:
            print("not in the binary's JSON, skipped on the rankseg side:", " ".join(skipped))
        theirs, raw, capped = time_rankseg(dumped, sizes, args.repeats, methods,
                                           max_seconds=args.max_seconds,
                                           wanted=lambda s, m: (s, m) in ours)
    finally:
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)

    header = machine_line(threads)
    if args.quick:
        notes.append("Quick run (--quick).")
    notes.append(f"Rust side: median of {args.ours_repeats} runs after a warm-up.")
    notes.append(f"rankseg side: {args.repeats} timed repeat(s) per method; "
                 "a first call under 1 s is discarded as warm-up; a first call over "
                 f"--max-seconds {args.max_seconds:g} s is reported alone.")
    notes.append("ba / trna / ba_trna: RankSEG(metric='dice', solver='BA' | 'TRNA' | 'BA+TRNA', "
                 "output_mode='multilabel') on the same softmax maps.")
    rows = build_rows(ours, theirs, sizes, capped)
    write_text_atomic(os.path.join(args.out, "bench.csv"), render_csv(rows, header, args.max_seconds))
    write_text_atomic(os.path.join(args.out, "bench.md"),
                 render_md(rows, header, shapes, notes, args.max_seconds))
    blob = {"machine": header, "repeats": args.repeats, "quick": args.quick,
            "max_seconds": args.max_seconds, "shapes": shapes,
            "ours": [{"size": s, "method": m, "seconds": v} for (s, m), v in sorted(ours.items())],
            "rankseg": [{"size": s, "method": m, "seconds": v, "runs": raw[(s, m)],
                         "single_run_over_max_seconds": (s, m) in capped}
                        for (s, m), v in sorted(theirs.items())],
            "rows": rows}
    write_text_atomic(os.path.join(args.out, "bench.json"), json.dumps(blob, indent=1) + "\n")
    print(render_md(rows, header, shapes, notes, args.max_seconds))
    print(f"wrote {args.out}/bench.csv, bench.md, bench.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
