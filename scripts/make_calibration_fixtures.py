#!/usr/bin/env python3
"""Write the calibration fixtures (tests/fixtures/calibration/): ECE and SCE as the
RankSEG-RMA experiment's own metrics/ece_metric.py and metrics/sce_metric.py compute them.

    /tmp/venv/bin/python scripts/make_calibration_fixtures.py [--rma-exp DIR] [--out DIR]

--rma-exp (or the RANKSEG_RMA_EXP environment variable; default /tmp/rma/exp) is the
experiment's exp/ folder, imported read only. Needs numpy and torch. Seeded: rerunning
gives identical files. tests/calibration.rs reads them; CI never runs this.

Per case, a `probs` dataset (DATA.md) and what the experiment reports for it:

<case>/probs/<id>.npy    (C, H, W) float32 softmax probabilities
<case>/labels/<id>.npy   (H, W) int64 labels; 255 = ignored
<case>/expected.json     {"num_classes", "num_bins", "ignore_index": 255,
                          "values": {"ECED", "ECEI", "SCED", "SCEI"}}

The experiment's test loop maps the ignore label to num_classes and gives its metrics
ignore_index = num_classes, one image at a time (test batch 1 per `add`); so does this
script. Some pixels hold confidences exactly on the float32 bin edges
(torch.linspace(0, 1 - 1/n, n)), and two-class maps hold exact 0.5/0.5 ties, so that the
bucketing (right=True) and argmax's first-index rule are pinned; one multiclass image is
entirely ignored (its ECE counts as 0 in ECEI, its SCE over the clamped "present" class).
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep scripts/ and the (read-only) experiment checkout clean

import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
IGNORE = 255

# (name, classes, images, height, width, num_bins, seed)
CASES = [
    ("mc5_bins10", 5, 4, 12, 16, 10, 1),
    ("mc5_bins7", 5, 3, 11, 13, 7, 2),
    ("binary_bins10", 2, 3, 10, 14, 10, 3),
    ("mc21_bins15", 21, 2, 8, 9, 15, 4),
]


def edges(num_bins):
    """The experiment's bin lower edges, float32."""
    return torch.linspace(0.0, 1.0 - 1.0 / num_bins, num_bins).numpy()


def make_image(rng, classes, height, width, num_bins, k, images):
    """One (C, H, W) float32 map and its (H, W) int64 label."""
    sharpness = 0.5 + 2.5 * k / max(1, images - 1)
    logits = rng.normal(size=(classes, height, width)) * sharpness
    probs = np.exp(logits - logits.max(0))
    probs = (probs / probs.sum(0)).astype(np.float32)
    argmax = probs.argmax(0)
    # Mostly the argmax, partly another class: calibrated-ish but not perfect.
    label = np.where(rng.random((height, width)) < 0.6, argmax, rng.integers(0, classes, (height, width)))
    flat_p = probs.reshape(classes, -1)
    # Confidences exactly on the bin edges in the first row (the top class's probability
    # set to the edge, the rest shared).
    for x, edge in enumerate(e for e in edges(num_bins) if e >= 0.5 or classes > 2 and e >= 0.3):
        if x >= width:
            break
        top = int(rng.integers(0, classes))
        rest = np.float32((1.0 - edge) / (classes - 1))
        flat_p[:, x] = rest
        flat_p[top, x] = edge
    if classes == 2:
        # Exact ties in the second row: argmax takes class 0.
        flat_p[:, width : width + 3] = np.float32(0.5)
    label = label.reshape(-1)
    label[rng.random(label.size) < 0.1] = IGNORE
    if classes > 2 and k == 1:
        label[:] = IGNORE
    return probs, label.reshape(height, width).astype(np.int64)


def reference(exp_dir, classes, num_bins, maps):
    """ECED/ECEI/SCED/SCEI of the experiment's ECEMetric and SCEMetric."""
    sys.path.insert(0, exp_dir)
    try:
        from metrics.ece_metric import ECEMetric
        from metrics.sce_metric import SCEMetric
    finally:
        sys.path.remove(exp_dir)
    ece = ECEMetric(ECED=True, ECEI=True, num_bins=num_bins, ignore_index=classes)
    sce = SCEMetric(SCED=True, SCEI=True, num_bins=num_bins, num_classes=classes, ignore_index=classes)
    for probs, label in maps:
        prob = torch.from_numpy(probs).unsqueeze(0)
        lab = torch.from_numpy(np.where(label == IGNORE, classes, label)).unsqueeze(0)
        ece.add(prob, lab)
        sce.add(prob, lab)
    values = {**ece.value(), **sce.value()}
    return {key: float(values[key]) for key in ("ECED", "ECEI", "SCED", "SCEI")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rma-exp", default=os.environ.get("RANKSEG_RMA_EXP", "/tmp/rma/exp"))
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "calibration"))
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.rma_exp, "metrics", "ece_metric.py")):
        raise SystemExit(f"{args.rma_exp} is not the experiment's exp/ folder (no metrics/ece_metric.py)")
    torch.set_num_threads(1)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".calibration_build_", dir=os.path.dirname(out))
    try:
        for name, classes, images, height, width, num_bins, seed in CASES:
            rng = np.random.default_rng(seed)
            maps = [make_image(rng, classes, height, width, num_bins, k, images) for k in range(images)]
            case = os.path.join(tmp, name)
            os.makedirs(os.path.join(case, "probs"))
            os.makedirs(os.path.join(case, "labels"))
            for k, (probs, label) in enumerate(maps):
                np.save(os.path.join(case, "probs", f"img{k}.npy"), probs)
                np.save(os.path.join(case, "labels", f"img{k}.npy"), label)
            expected = {
                "num_classes": classes,
                "num_bins": num_bins,
                "ignore_index": IGNORE,
                "values": reference(os.path.abspath(args.rma_exp), classes, num_bins, maps),
            }
            with open(os.path.join(case, "expected.json"), "w") as f:
                json.dump(expected, f, indent=2)
                f.write("\n")
            print(name, expected["values"])
        for d, _, files in os.walk(tmp):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


if __name__ == "__main__":
    main()
