"""Helpers the benchmark scripts share: describing the machine, writing result files
atomically (temporary file in the same folder, then rename), and, for the torch-vs-Rust
`logits` benchmarks (bench_models_torch.py, bench_zoo_torch.py), their common options, timing
torch, running the Rust binary, comparing its logits and writing the md / csv / json results.
The fixture makers (through fixtureutil.py) use replace_dir to swap in their output folders.

numpy and torch are imported only by the helpers that need them."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # non-Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------
# command line of the torch-vs-Rust benchmarks
# ---------------------------------------------------------------------------------------

def bench_parser(doc: str, stem: str, threads_help: str) -> argparse.ArgumentParser:
    """An argument parser (description: the first paragraph of `doc`) with --out
    (results/bench/<stem>), --repeats, --rust-repeats and --threads."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join("results", "bench", stem),
                    help=f"directory for {stem}.md / {stem}.csv / {stem}.json")
    ap.add_argument("--repeats", type=int, default=5, help="timed torch forwards (after one warm-up)")
    ap.add_argument("--rust-repeats", type=int, default=None,
                    help="--repeats passed to the Rust binary (default: --repeats)")
    ap.add_argument("--threads", type=int, default=available_cpus(), help=threads_help)
    return ap


def model_names(spec: str, known) -> list:
    """The names in a comma-separated --models value, each one of `known`."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown model {n!r}; known: {', '.join(known)}")
    return names


# ---------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary file name in path's folder (created, empty) to write; when the block
    ends it is made 0644 and renamed onto `path`, or removed if the block raises."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def save_npy_atomic(path: str, arr) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def replace_dir(src: str, dst: str, backup_prefix: str | None = None) -> None:
    """Rename the folder `src` to `dst`; an existing `dst` is first moved into a new temporary
    folder (`backup_prefix`*, default `.<name of dst>.old-`*) next to it, and removed after."""
    parent = os.path.dirname(os.path.abspath(dst))
    if backup_prefix is None:
        backup_prefix = f".{os.path.basename(dst)}.old-"
    backup = None
    if os.path.exists(dst):
        backup = tempfile.mkdtemp(prefix=backup_prefix, dir=parent)
        os.rename(dst, os.path.join(backup, "old"))
    os.rename(src, dst)
    if backup:
        shutil.rmtree(backup)


# ---------------------------------------------------------------------------------------
# torch timing, the Rust `logits` command, comparing logits
# ---------------------------------------------------------------------------------------

def time_fn(fn, x, repeats):
    """(fn(x) of the warm-up call, its seconds, the seconds of `repeats` more calls), all under
    torch.inference_mode()."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        ref = fn(x)
        warm = time.perf_counter() - t0
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            secs.append(time.perf_counter() - t0)
    return ref, warm, secs


def parse_seconds(timing_path, stdout):
    """{"seconds": [...]} from the timing file, else from the last matching stdout line."""
    if timing_path and os.path.exists(timing_path):
        with open(timing_path) as f:
            data = json.load(f)
        return [float(s) for s in data["seconds"]], "timing-json"
    for line in reversed((stdout or "").splitlines()):
        line = line.strip()
        if line.startswith("{") and '"seconds"' in line:
            return [float(s) for s in json.loads(line)["seconds"]], "stdout"
    raise ValueError("no {\"seconds\": [...]} in --timing-json file or stdout")


def run_rust_logits(rust_bin, model_args, input_path, repeats, work, name, timeout, cwd=None, env=None):
    """Run `rust_bin logits MODEL_ARGS --input input_path --out OUT.npy --repeats N --timing-json
    FILE` (OUT.npy, FILE in `work`, named after `name`; in `cwd`, with `env`). Returns (a record:
    command, cwd if given, wall_s, returncode, output tails, seconds, error if any; the logits
    array, or None if the run failed or wrote none). OUT.npy is removed after reading."""
    import numpy as np

    out_npy = os.path.join(work, f"{name}.logits.npy")
    timing = os.path.join(work, f"{name}.timing.json")
    for p in (out_npy, timing):
        if os.path.exists(p):
            os.unlink(p)
    cmd = [rust_bin, "logits", *model_args, "--input", input_path, "--out", out_npy,
           "--repeats", str(repeats), "--timing-json", timing]
    res = {"command": cmd}
    if cwd is not None:
        res["cwd"] = cwd
    try:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
        res["wall_s"] = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        res["error"] = f"timed out after {timeout} s"
        return res, None
    except OSError as e:
        res["error"] = f"could not run: {e}"
        return res, None
    res["returncode"] = p.returncode
    res["stdout_tail"] = p.stdout[-2000:]
    res["stderr_tail"] = p.stderr[-2000:]
    if p.returncode != 0:
        res["error"] = f"exit status {p.returncode}: {p.stderr.strip()[-500:] or p.stdout.strip()[-500:]}"
        return res, None
    try:
        res["seconds"], res["seconds_from"] = parse_seconds(timing, p.stdout)
    except Exception as e:  # keep going: the logits may still be comparable
        res["error"] = f"timing: {e}"
    logits = None
    try:
        logits = np.load(out_npy, allow_pickle=False)
    except Exception as e:
        res["error"] = (res.get("error", "") + "; " if res.get("error") else "") + f"logits: {e}"
    finally:
        if os.path.exists(out_npy):
            os.unlink(out_npy)  # (1,150,512,512) float32 is 157 MB
    return res, logits


def compare_rust(row, res, logits, ref, details=None):
    """Fill row's candle_s (median of the Rust seconds), ratio (candle_s / row["torch_s"]) and
    max_abs_diff (max |Rust logits - torch logits `ref`|) from a run_rust_logits result; return
    the status notes (shape mismatch, NaN in the Rust logits, the run's error). With `details`
    (a dict), record there mean_abs_diff, max_abs_diff_rel (/ row["torch_max_abs_logit"]) and
    argmax_agreement too."""
    import numpy as np

    status = []
    if res.get("seconds"):
        row["candle_s"] = statistics.median(res["seconds"])
        row["ratio"] = row["candle_s"] / row["torch_s"]
    if logits is not None:
        if tuple(logits.shape) != tuple(ref.shape):
            status.append(f"shape {tuple(logits.shape)} != {tuple(ref.shape)}")
        else:
            diff = np.abs(logits.astype(np.float64) - ref.astype(np.float64))
            row["max_abs_diff"] = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan")
            if details is not None:
                details["mean_abs_diff"] = float(np.nanmean(diff)) if not np.isnan(diff).all() else float("nan")
                if row["torch_max_abs_logit"]:
                    details["max_abs_diff_rel"] = row["max_abs_diff"] / row["torch_max_abs_logit"]
                details["argmax_agreement"] = float((logits.argmax(1) == ref.argmax(1)).mean())
            if np.isnan(logits).any():
                status.append("NaN in Rust logits")
            del diff
    if res.get("error"):
        status.append("FAILED: " + res["error"].replace("|", "/").replace("\n", " ")[:300])
    return status


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------

def fmt(v, spec):
    return "" if v is None else format(v, spec)


# the torch-vs-Rust tables' columns: (row key, markdown header, markdown format, csv column,
# csv format); a header / csv column None = not in that table, a format None = the value as
# it is (and a left-aligned markdown column)
MODEL_COLUMN = ("model", "model", None, "model", None)
TIMING_COLUMNS = [
    ("torch_s", "torch_s", ".4f", "torch_s", ".6f"),
    ("candle_s", "candle_s", ".4f", "candle_s", ".6f"),
    ("ratio", "ratio", ".3f", "ratio", ".4f"),
    ("max_abs_diff", "max_abs_diff", ".3e", "max_abs_diff", ".6e"),
    ("torch_max_abs_logit", "torch max abs logit", ".3f", "torch_max_abs_logit", ".6f"),
    ("status", "status", None, "status", None),
]


def write_results(out_dir, stem, machine, intro, columns, rows, meta, details):
    """Write, atomically, out_dir/<stem>.md ("Machine: ..." line, the `intro` paragraph, a table),
    out_dir/<stem>.csv (a leading '# machine' line, then the csv columns) and out_dir/<stem>.json
    ({"meta", "rows", "details"}), and say so."""
    os.makedirs(out_dir, exist_ok=True)
    md_cols = [c for c in columns if c[1] is not None]
    md = [f"Machine: {machine}", "", intro, "",
          "| " + " | ".join(c[1] for c in md_cols) + " |",
          "|" + "|".join("---" if c[2] is None else "---:" for c in md_cols) + "|"]
    for r in rows:
        md.append("| " + " | ".join(f"{r[c[0]]}" if c[2] is None else fmt(r[c[0]], c[2]) for c in md_cols)
                  + " |")
    write_text_atomic(os.path.join(out_dir, f"{stem}.md"), "\n".join(md) + "\n")

    csv_cols = [c for c in columns if c[3] is not None]
    buf = io.StringIO()
    buf.write(f"# {machine}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c[3] for c in csv_cols])
    for r in rows:
        w.writerow([r[c[0]] if c[4] is None else fmt(r[c[0]], c[4]) for c in csv_cols])
    write_text_atomic(os.path.join(out_dir, f"{stem}.csv"), buf.getvalue())
    write_text_atomic(os.path.join(out_dir, f"{stem}.json"),
                      json.dumps({"meta": meta, "rows": rows, "details": details}, indent=1) + "\n")
    print(f"wrote {os.path.join(out_dir, f'{stem}.md')}, {stem}.csv, {stem}.json")
