#!/usr/bin/env python3
"""Times the experiment's own predictors (RankSEG-RMA exp/rankseg_rma.py, torch on CPU)
against `rankseg exp` on the same probability maps (the `probs` dataset), and argmax in both.

    python scripts/bench_exp_predict.py --rma-exp /path/to/RankSEG-RMA/exp \
        --rust-bin target/release/rankseg --out results/bench/exp

Maps: seeded smooth softmax maps at PASCAL VOC (21 x 512 x 512), ADE20K (150 x 512 x 512)
and binary CT (2 x 384 x 384) sizes. Ours: the predict seconds `exp` records in run.json,
per image; the experiment's: the median per-image time of its function. Both sides use all
cores. Writes exp_predict.md and exp_predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import available_cpus, cpu_model, write_text_atomic  # noqa: E402

SIZES = {"voc": (21, 512, 512), "ade20k": (150, 512, 512), "ct": (2, 384, 384)}


def softmax_map(classes, h, w, seed):
    rng = np.random.default_rng(seed)
    logits = np.stack([gaussian_filter(rng.normal(size=(h, w)), 12) for _ in range(classes)])
    logits = logits / logits.std() * 2.5
    e = np.exp(logits - logits.max(0, keepdims=True))
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rma-exp", default="/tmp/rma/exp")
    ap.add_argument("--rust-bin", default="target/release/rankseg")
    ap.add_argument("--out", default="results/bench/exp")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, args.rma_exp)
    from rankseg_rma import rankseg_rma  # the experiment's own predictor

    rows = []
    for name, (c, h, w) in SIZES.items():
        maps = [softmax_map(c, h, w, seed) for seed in range(args.images)]
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(f"{tmp}/probs")
            for i, m in enumerate(maps):
                np.save(f"{tmp}/probs/{name}{i}.npy", m)
                np.save(f"{tmp}/probs/{name}{i}_label.npy", m.argmax(0).astype(np.int64))
            yaml = f"{tmp}/probs.yaml"
            with open(yaml, "w") as f:
                f.write(f"dataset: probs\nnum_classes: {c}\nignore_index: 255\nimage_prefix: /probs/\n"
                        "image_suffix: .npy\nlabel_prefix: /probs/\nlabel_suffix: _label.npy\n")
            for predict in ["argmax", "rankseg_rma"]:
                theirs = []
                for m in maps:
                    prob = torch.from_numpy(m)[None]
                    if predict == "argmax":
                        theirs.append(median_time(lambda: prob.argmax(1), args.repeats))
                    else:
                        theirs.append(median_time(lambda: rankseg_rma(prob.clone(), opt_metric="dice",
                                                                      allow_overlap=False,
                                                                      to_nonverlap_method="rma_score"),
                                                  args.repeats))
                ours = []
                for _ in range(args.repeats):
                    out = f"{tmp}/out"
                    subprocess.run([args.rust_bin, "exp", "--test-only", "--data_dir", tmp, "--data_yaml", yaml,
                                    "--predict_yaml", predict, "--output_dir", out, "--force"],
                                   check=True, capture_output=True)
                    run = json.load(open(f"{out}/run.json"))["predictions"][predict]
                    ours.append(run["seconds"]["predict"] / run["images"])
                rows.append({"size": name, "shape": [c, h, w], "predict": predict,
                             "experiment_s": float(np.median(theirs)), "ours_s": float(np.median(ours))})
                print(rows[-1], flush=True)

    meta = {"cpu": cpu_model(), "cpus": available_cpus(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "images": args.images, "repeats": args.repeats}
    lines = [f"# The experiment's predictors vs `rankseg exp` (per image, medians)\n",
             f"{meta['cpu']}, {meta['cpus']} CPUs; torch {meta['torch']} ({meta['torch_threads']} threads). "
             f"{args.images} seeded maps per size; ours = predict seconds from run.json.\n",
             "| size | C x H x W | predictor | experiment (torch) | rankseg exp | speed-up |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"| {r['size']} | {shape} | {r['predict']} | {1e3 * r['experiment_s']:.1f} ms | "
                     f"{1e3 * r['ours_s']:.1f} ms | {r['experiment_s'] / r['ours_s']:.1f}x |")
    os.makedirs(args.out, exist_ok=True)
    write_text_atomic(f"{args.out}/exp_predict.md", "\n".join(lines) + "\n")
    write_text_atomic(f"{args.out}/exp_predict.json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
