"""The GPU check that scripts/gpu_check.sh runs on a machine with an NVIDIA GPU.

1. Every predict fixture (tests/fixtures/predict): `rankseg predict --device cuda` against
   the fixture's expected output (rankseg 0.0.8's), byte for byte; solvers without a CUDA
   kernel are listed as such (their refusal message checked).
2. Every Hugging Face model fixture (tests/fixtures/models): `rankseg logits --device cuda`
   against transformers' logits (max |diff| / max(1, max |logit|) <= 1e-3).
3. Predictor timings on the GPU, whole process, at ADE20K (150 x 512 x 512) and Cityscapes
   (19 x 1024 x 2048) sizes, batch 1 and 8: ours (`predict --device cuda`, npy read, upload,
   kernel, download, npy write) against the same in Python (np.load, torch upload,
   rankseg 0.0.8 RankSEG(...).predict or torch.argmax, download, np.save), medians of
   --repeats interleaved runs.

Writes predict_fixtures.md, models.md and predictors.md (+ .json) under --out."""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import write_text_atomic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def predict_flags(params: dict) -> list:
    """Every key of a fixture's params.json as a flag, as tests/common/mod.rs reads them."""
    flags = []
    for key, value in params.items():
        flags += ["--" + key.replace("_", "-"), value if isinstance(value, str) else json.dumps(value)]
    return flags


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def check_predict_fixtures(binary, work):
    rows = []
    for case in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "predict", "*"))):
        params = json.load(open(os.path.join(case, "params.json")))
        out = os.path.join(work, "pred.npy")
        res = run([binary, "predict", "--probs", os.path.join(case, "probs.npy"), "--out", out,
                   "--device", "cuda"] + predict_flags(params))
        name = os.path.basename(case)
        if res.returncode != 0:
            cpu_only = "use --device cpu" in res.stderr or "float64" in res.stderr
            rows.append((name, "cpu only" if cpu_only else "FAILED", res.stderr.strip()[-160:]))
            continue
        same = np.array_equal(np.load(out), np.load(os.path.join(case, "expected.npy")))
        rows.append((name, "same" if same else "DIFFERENT", ""))
    return rows


def check_models(binary, work):
    rows = []
    manifest = json.load(open(os.path.join(ROOT, "tests", "fixtures", "models", "manifest.json")))
    for name in manifest["cases"]:
        case = os.path.join(ROOT, "tests", "fixtures", "models", name)
        for stem in ("", "_odd"):
            x = os.path.join(case, f"input{stem}.npy")
            if not os.path.exists(x):
                continue
            out = os.path.join(work, "logits.npy")
            res = run([binary, "logits", "--model", case, "--input", x, "--out", out, "--device", "cuda"])
            if res.returncode != 0:
                rows.append((name + stem, "FAILED", res.stderr.strip()[-160:]))
                continue
            want = np.load(os.path.join(case, f"logits{stem}.npy"))
            got = np.load(out)
            rel = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
            rows.append((name + stem, "ok" if rel <= 1e-3 else "DIFFERENT", f"{rel:.2e}"))
    return rows


def seeded_probs(batch, classes, h, w, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((batch, classes, h // 8, w // 8), dtype=np.float32) * 3
    logits = logits.repeat(8, axis=2).repeat(8, axis=3)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def python_predict(method):
    """A whole-process Python run, as `python -c`: load, upload, predict, download, save."""
    body = {
        "argmax": "y = torch.argmax(t, dim=1)",
        "threshold": "y = t > 0.5",
        "rma_dice": "y = RankSEG(metric='dice', solver='RMA', output_mode='multiclass').predict(t)",
        "rma_iou": "y = RankSEG(metric='iou', solver='RMA', output_mode='multiclass').predict(t)",
    }[method]
    return ("import sys, numpy as np, torch\nfrom rankseg import RankSEG\n"
            "t = torch.from_numpy(np.load(sys.argv[1])).cuda()\n"
            f"{body}\n"
            "torch.cuda.synchronize()\nnp.save(sys.argv[2], y.cpu().numpy())\n")


OURS = {"argmax": ["--solver", "argmax"], "threshold": ["--solver", "threshold", "--output-mode", "multilabel"],
        "rma_dice": ["--solver", "rma", "--metric", "dice"], "rma_iou": ["--solver", "rma", "--metric", "iou"]}


def time_predictors(binary, work, repeats):
    rows = []
    sizes = [("ade20k", 150, 512, 512), ("cityscapes", 19, 1024, 2048)]
    for size, classes, h, w in sizes:
        for batch in (1, 8):
            path = os.path.join(work, f"{size}_{batch}.npy")
            np.save(path, seeded_probs(batch, classes, h, w))
            for method, flags in OURS.items():
                ours_cmd = [binary, "predict", "--probs", path, "--out", os.path.join(work, "o.npy"),
                            "--device", "cuda"] + flags
                py_cmd = [sys.executable, "-c", python_predict(method), path, os.path.join(work, "p.npy")]
                times = {"ours": [], "python": []}
                status = "ok"
                for _ in range(repeats):
                    for side, cmd in (("ours", ours_cmd), ("python", py_cmd)):
                        t0 = time.perf_counter()
                        res = run(cmd)
                        times[side].append(time.perf_counter() - t0)
                        if res.returncode != 0:
                            status = f"{side}: " + res.stderr.strip().splitlines()[-1][:120]
                    if status != "ok":
                        break
                med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
                rows.append({"size": size, "batch": batch, "method": method, "ours_s": med["ours"],
                             "python_s": med["python"], "ratio": med["ours"] / med["python"],
                             "status": status})
                print(rows[-1], flush=True)
    return rows


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = open(os.path.join(args.out, "device.txt")).read().strip()
    with tempfile.TemporaryDirectory() as work:
        fixtures = check_predict_fixtures(args.bin, work)
        write_text_atomic(os.path.join(args.out, "predict_fixtures.md"),
                          f"GPU: {device}. `predict --device cuda` vs rankseg 0.0.8's expected output.\n\n"
                          + table(["fixture", "result", "note"], fixtures))
        models = check_models(args.bin, work)
        write_text_atomic(os.path.join(args.out, "models.md"),
                          f"GPU: {device}. `logits --device cuda` vs transformers; max |diff| / max(1, max |logit|).\n\n"
                          + table(["fixture", "result", "rel diff"], models))
        timings = time_predictors(args.bin, work, args.repeats)
    write_text_atomic(os.path.join(args.out, "predictors.json"), json.dumps(timings, indent=1) + "\n")
    write_text_atomic(os.path.join(args.out, "predictors.md"),
                      f"GPU: {device}. Whole-process seconds, medians of {args.repeats} interleaved runs; "
                      "ratio = ours / Python (rankseg 0.0.8 on torch CUDA, or torch's argmax / threshold).\n\n"
                      + table(["size", "batch", "method", "ours_s", "python_s", "ratio", "status"],
                              [(r["size"], r["batch"], r["method"], f"{r['ours_s']:.3f}", f"{r['python_s']:.3f}",
                                f"{r['ratio']:.2f}", r["status"]) for r in timings]))
    failed = [r for r in fixtures + models if r[1] in ("FAILED", "DIFFERENT")]
    print(f"{len(failed)} fixture checks failed" if failed else "every fixture check passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
