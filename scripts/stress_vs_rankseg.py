"""Compare `rankseg predict` with rankseg 0.0.8 on larger seeded maps than the fixtures.

The fixtures are small enough that the Rust volume search sorts whole rows; maps like
these exercise its binned screening path. Odd seeds upsample by nearest neighbour, so
every probability occurs in 4x4 blocks (exact ties: torch's tie order decides the cuts,
and whole chunks of pixels are contested). Reports, per case, how many pixels differ.

    python scripts/stress_vs_rankseg.py --bin target/release/rankseg [--size 256] [--seeds 3]
"""
import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from rankseg import RankSEG


def smooth_softmax(rng, classes, size, grid, scale, blocky=False):
    if blocky:
        logits = torch.from_numpy(rng.standard_normal((1, classes, size // 4, size // 4)).astype(np.float32) * scale)
        logits = logits.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        return torch.softmax(logits, dim=1).numpy()
    logits = torch.from_numpy(rng.standard_normal((1, classes, grid, grid)).astype(np.float32) * scale)
    logits = torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    return torch.softmax(logits, dim=1).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/rankseg")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    cases = [
        dict(metric="dice", output_mode="multiclass", smooth=0.0),
        dict(metric="iou", output_mode="multiclass", smooth=0.0),
        dict(metric="dice", output_mode="multilabel", smooth=0.0),
        dict(metric="dice", output_mode="multiclass", smooth=1.0),
        dict(metric="iou", output_mode="multilabel", smooth=1.0),
        dict(metric="iou", output_mode="multiclass", smooth=1.0),
        dict(metric="dice", output_mode="multiclass", smooth=1e7),
        dict(metric="iou", output_mode="multiclass", smooth=1e7),
    ]
    total_bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            classes = [2, 21, 150][seed % 3]
            probs = smooth_softmax(rng, classes, args.size, 8 + seed, 2.0 + seed, blocky=seed % 2 == 1)
            if seed % 4 == 2:
                probs = probs.astype(np.float64)
            src = Path(tmp) / "probs.npy"
            np.save(src, probs)
            for case in cases:
                ours_path = Path(tmp) / "out.npy"
                cmd = [args.bin, "predict", "--probs", str(src), "--out", str(ours_path),
                       "--metric", case["metric"], "--output-mode", case["output_mode"],
                       "--smooth", str(case["smooth"])]
                subprocess.run(cmd, check=True)
                ours = np.load(ours_path)
                theirs = RankSEG(solver="RMA", **case).predict(torch.from_numpy(probs)).numpy()
                bad = int((ours != theirs.astype(ours.dtype)).sum())
                total_bad += bad
                print(f"seed {seed} C={classes} {probs.dtype} {case}: {bad} pixels differ of {theirs.size}")
    print("total differing:", total_bad)


if __name__ == "__main__":
    main()
