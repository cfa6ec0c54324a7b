#!/usr/bin/env python3
"""Independent numpy implementation of the segmentation metrics (oracle for tests).

Semantics follow the `AccuracyMetric` of the RankSEG-RMA experiment code, with this
project's decisions (see docs / SPEC.md):

* ``pred`` is either an integer class map shaped like ``label`` (B, *spatial), or 0/1
  masks (B, N, *spatial) (bool / uint8).  ``label`` is integer (B, *spatial).
* Pixels whose label equals ``ignore_index`` are dropped; an image with no kept pixel
  is skipped.  Class-map values outside 0..N-1 (e.g. a void index) predict no class.
  Labels outside 0..N-1 that are not ``ignore_index`` raise ``ValueError``.
* active(i, c): multiclass (N != 2): c present in the kept label.  Binary (N == 2):
  c present in the kept label or predicted on a kept pixel.
* Every ratio that is 0/0 is NaN and is left out of the mean it would enter
  (class left out of D means, image left out of I metrics, value left out of C
  metrics); a mean over nothing is NaN (serialised as JSON null).

All returned values are multiplied by 100 and are Python floats.

Differences from the reference AccuracyMetric (checked against a torch re-implementation
of it on random NaN-free cases: equal to float32 rounding, max |diff| ~2e-5):
* it accumulates in float32; this module in float64;
* where it yields NaN (a class absent from every image in D/C means, binary Acc with
  tp + fn = 0) or 1e6 (C worst-q of a class with no active image) this module leaves
  the value out instead;
* it clamps out-of-range labels into 0..N-1 and cannot take void predictions or masks;
* binary I: it scores 1 when *either* class is inactive in the image; here only when
  class 1 is inactive (identical for complete class maps; differs only for masks or
  void predictions where class 0 is absent).
Worst-q counts: images use int(q / 100 * n) in float64 (e.g. q=70, n=90 -> 62, not 63);
classes use the float32 product (equal to floor(q * n / 100) for q = 10..100, n <= 1e5).

Usage as a script (quick manual check):
    python scripts/reference_metrics.py PRED.npy LABEL.npy NUM_CLASSES [IGNORE] [Q]
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

__all__ = ["confusion_counts", "compute_metrics", "worst_q_count_image",
           "worst_q_count_class", "to_jsonable"]

QS = tuple(range(10, 101, 10))
_NAMES = ("Acc", "IoU", "Dice")


# ----------------------------------------------------------------------------- counts
def confusion_counts(pred, label, num_classes, ignore_index=255):
    """Per kept image and class counts.

    Returns (tp, fp, fn, active, kept_images): int64 arrays (n_kept, N) and bool
    array (n_kept, N), plus the indices (in the batch) of the images kept.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    n = int(num_classes)
    if n < 1:
        raise ValueError("num_classes must be >= 1")
    if label.ndim < 2:
        raise ValueError("label must have shape (B, *spatial)")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an integer array, got {label.dtype}")
    batch = label.shape[0]

    if pred.shape == label.shape:
        if not (np.issubdtype(pred.dtype, np.integer) or pred.dtype == np.bool_):
            raise ValueError(f"class-map pred must be integer, got {pred.dtype}")
        is_mask = False
    elif pred.ndim == label.ndim + 1 and pred.shape[0] == batch and \
            pred.shape[1] == n and pred.shape[2:] == label.shape[1:]:
        if not (np.issubdtype(pred.dtype, np.integer) or pred.dtype == np.bool_):
            raise ValueError(f"mask pred must be bool/uint8, got {pred.dtype}")
        if pred.dtype != np.bool_ and pred.size and (pred.min() < 0 or pred.max() > 1):
            raise ValueError("mask pred must contain only 0 and 1")
        is_mask = True
    else:
        raise ValueError(f"pred shape {pred.shape} fits neither label shape {label.shape} "
                         f"nor (B, {n}, *spatial)")

    binary = n == 2
    lab = label.reshape(batch, -1).astype(np.int64)
    ign = np.int64(ignore_index) if ignore_index is not None else None
    keep_all = np.ones_like(lab, dtype=bool) if ign is None else (lab != ign)
    bad = keep_all & ((lab < 0) | (lab >= n))
    if bad.any():
        vals = np.unique(lab[bad])[:5].tolist()
        raise ValueError(f"label values {vals} are outside 0..{n - 1} and not ignore_index")

    if is_mask:
        pr = pred.reshape(batch, n, -1).astype(bool)
    else:
        pr = pred.reshape(batch, -1).astype(np.int64)

    tps, fps, fns, acts, kept_ids = [], [], [], [], []
    for i in range(batch):
        keep = keep_all[i]
        if not keep.any():
            continue
        li = lab[i][keep]
        tp = np.zeros(n, np.int64)
        fp = np.zeros(n, np.int64)
        fn = np.zeros(n, np.int64)
        act = np.zeros(n, bool)
        for c in range(n):
            pc = pr[i, c][keep] if is_mask else (pr[i][keep] == c)
            lc = li == c
            tp[c] = np.count_nonzero(pc & lc)
            fp[c] = np.count_nonzero(pc & ~lc)
            fn[c] = np.count_nonzero(~pc & lc)
            act[c] = lc.any() or (binary and pc.any())
        tps.append(tp)
        fps.append(fp)
        fns.append(fn)
        acts.append(act)
        kept_ids.append(i)
    shape = (len(kept_ids), n)
    stack = (lambda xs, dt: np.array(xs, dtype=dt).reshape(shape))
    return (stack(tps, np.int64), stack(fps, np.int64), stack(fns, np.int64),
            stack(acts, bool), kept_ids)


# ----------------------------------------------------------------------------- helpers
def _ratio(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den  # 0/0 -> NaN (den is never 0 with num != 0 here)


def _nanmean(x):
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def _per_class_ratios(tp, fp, fn):
    return {
        "Acc": _ratio(tp, tp + fn),
        "IoU": _ratio(tp, tp + fp + fn),
        "Dice": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def worst_q_count_image(q, n):
    """Number of lowest image values averaged: max(1, int(q / 100 * n)) in float64."""
    return max(1, int(q / 100 * n))


def worst_q_count_class(q, n):
    """Per-class count: the reference multiplies in float32 (torch default dtype)."""
    prod = np.float32(np.float32(q / 100) * np.float32(n))
    return max(1, int(prod))


def _worst_mean(sorted_vals, k):
    return float(np.mean(sorted_vals[:k]))


# ----------------------------------------------------------------------------- metrics
def compute_metrics(pred, label, num_classes, ignore_index=255, q=10):
    """Return the metric dict (all values x100, NaN where nothing is left to average)."""
    tp, fp, fn, active, _ = confusion_counts(pred, label, num_classes, ignore_index)
    n = int(num_classes)
    binary = n == 2
    if float(q) == int(q):
        q = int(q)  # key spelling: mIoUI10, not mIoUI10.0
    out = {}

    # ---- D: dataset level
    tps, fps, fns = tp.sum(0), fp.sum(0), fn.sum(0)
    if binary:
        tps, fps, fns = tps[1:2], fps[1:2], fns[1:2]
    out["Acc"] = 100 * float(_ratio(tps.sum(), (tps + fns).sum()))
    d = _per_class_ratios(tps, fps, fns)
    out["mAccD"] = 100 * _nanmean(d["Acc"])
    out["mIoUD"] = 100 * _nanmean(d["IoU"])
    out["mDiceD"] = 100 * _nanmean(d["Dice"])

    ratios = _per_class_ratios(tp, fp, fn)  # (n_img, N)

    # ---- I: image level
    for name in _NAMES:
        r = ratios[name]
        if binary:
            vals = np.where(active[:, 1], r[:, 1], 1.0)
        else:
            cnt = active.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                vals = np.where(active, r, 0.0).sum(1) / cnt
            # an active class always has tp + fn > 0 here, so vals is finite
        vals = np.sort(vals[~np.isnan(vals)])
        m = vals.size
        if m == 0:
            allv = worstv = qsum = math.nan
        else:
            allv = _worst_mean(vals, m)
            worstv = _worst_mean(vals, worst_q_count_image(q, m))
            qsum = 0.0
            for qq in QS:
                qsum += _worst_mean(vals, worst_q_count_image(qq, m))
            qsum /= len(QS)
        out[f"m{name}I"] = 100 * allv
        out[f"m{name}IQ"] = 100 * qsum
        out[f"m{name}I{q}"] = 100 * worstv

    # ---- C: class level (both classes in the binary case, as the reference does)
    for name in _NAMES:
        r = ratios[name]
        per_all, per_q = [], []
        per_qq = {qq: [] for qq in QS}
        for c in range(n):
            v = r[active[:, c], c]
            v = np.sort(v[~np.isnan(v)])
            m = v.size
            if m == 0:
                continue
            per_all.append(_worst_mean(v, m))
            per_q.append(_worst_mean(v, worst_q_count_class(q, m)))
            for qq in QS:
                per_qq[qq].append(_worst_mean(v, worst_q_count_class(qq, m)))
        if per_all:
            out[f"m{name}C"] = 100 * float(np.mean(per_all))
            out[f"m{name}C{q}"] = 100 * float(np.mean(per_q))
            qsum = 0.0
            for qq in QS:
                qsum += float(np.mean(per_qq[qq]))
            out[f"m{name}CQ"] = 100 * (qsum / len(QS))
        else:
            out[f"m{name}C"] = out[f"m{name}C{q}"] = out[f"m{name}CQ"] = math.nan

    order = ["Acc", "mAccD", "mIoUD", "mDiceD",
             "mAccI", "mIoUI", "mDiceI", "mAccIQ", "mIoUIQ", "mDiceIQ",
             f"mAccI{q}", f"mIoUI{q}", f"mDiceI{q}",
             "mAccC", "mIoUC", "mDiceC", "mAccCQ", "mIoUCQ", "mDiceCQ",
             f"mAccC{q}", f"mIoUC{q}", f"mDiceC{q}"]
    return {k: float(out[k]) for k in order}


def to_jsonable(metrics):
    """NaN -> None (JSON null); everything else a float."""
    return {k: (None if (v is None or math.isnan(v)) else float(v)) for k, v in metrics.items()}


def main(argv):
    if len(argv) < 4:
        print(__doc__)
        return 2
    pred = np.load(argv[1])
    label = np.load(argv[2])
    n = int(argv[3])
    ign = int(argv[4]) if len(argv) > 4 else 255
    q = int(argv[5]) if len(argv) > 5 else 10
    print(json.dumps(to_jsonable(compute_metrics(pred, label, n, ign, q)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
