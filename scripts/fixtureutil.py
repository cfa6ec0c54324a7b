"""Helpers the experiment fixture makers share (scripts/make_exp_fixtures.py,
scripts/make_zoo_fixtures.py): their command line and CPU settings, the output folder built in a
temporary directory next to it and then swapped in, and the experiment's LiTS evaluation as
test_medical does it (validation split, dataset, predictors, per-case metrics averaged over the
cases, the cross-check with the experiment's own AccuracyMetric)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import tempfile
from glob import glob

import cv2
import numpy as np
import torch

from benchutil import replace_dir
from reference_metrics import compute_metrics, to_jsonable

DEFAULT_RMA = "/tmp/rma/exp"


# ------------------------------------------------------------------------------ command line, output
def fixture_parser(doc, default_out):
    """The makers' argument parser: --rma-exp (read only) and --out."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rma-exp", default=DEFAULT_RMA, help="RankSEG-RMA exp/ checkout (read only)")
    ap.add_argument("--out", default=default_out)
    return ap


def deterministic_cpu():
    """CPU, one thread, fixed seeds: rerunning gives identical files."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    cv2.setNumThreads(0)


@contextlib.contextmanager
def build_dir(out, name):
    """A new temporary folder `.<name>_build_*` next to `out` to build the fixtures in (removed if
    the block raises)."""
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}_build_", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in(tmp, out, name, size_limit):
    """Make the built folder's modes uniform (folders 0755, files 0644: safetensors writes 0600
    files), check its size (bytes) against size_limit, and put it in place of `out` (an old `out`
    is moved into `.<name>_old_*` first, then removed). Returns the size."""
    for d, _, fs in os.walk(tmp):
        os.chmod(d, 0o755)
        for f in fs:
            os.chmod(os.path.join(d, f), 0o644)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
    if total > size_limit:
        raise SystemExit(f"fixture folder too large: {total} bytes")
    replace_dir(tmp, out, backup_prefix=f".{name}_old_")
    return total


def file_sizes(folder):
    """Sorted (path relative to `folder`, bytes) of every file below it (the READMEs' "Sizes")."""
    files = []
    for d, _, fs in os.walk(folder):
        for f in fs:
            p = os.path.join(d, f)
            files.append((os.path.relpath(p, folder), os.path.getsize(p)))
    files.sort()
    return files


# ------------------------------------------------------------------------------ predictors, AccuracyMetric
def run_predictors(prob, rma_mod, ba_mod, predictors):
    """{name: (pred long tensor (1, H, W)) or error string}."""
    out = {}
    for name, kind, params in predictors:
        try:
            if kind == "argmax":
                pred = prob.argmax(1)
            elif kind == "rankseg_rma":
                pred = rma_mod.rankseg_rma(prob.clone(), **params).long()
            elif kind == "rankseg_ba":
                pred = ba_mod.rankseg_ba(prob.clone(), **params).long()
            else:
                raise ValueError(kind)
            out[name] = pred
        except Exception as e:  # recorded, not fatal
            out[name] = f"{type(e).__name__}: {e}"
    return out


def experiment_accuracy(AccuracyMetric, preds, labels, nc, ign, q):
    """The experiment's own AccuracyMetric (metrics/accuracy_metric.py), fed image by image
    as test() / test_medical() do (labels mapped ignore -> num_classes): {key: float} without
    the per-instance / per-class lists."""
    am = AccuracyMetric(True, True, True, q, nc == 2, nc, nc)
    for p, l in zip(preds, labels):
        l = l.astype(np.int64).copy()
        l[l == ign] = nc
        am.add(torch.from_numpy(p.astype(np.int64))[None], torch.from_numpy(l)[None], ["x"])
    out = {}
    for k, v in am.value().items():
        if k in ("instanceIoU", "classIoU", "instanceDice", "classDice"):
            continue
        out[k] = float(v)
    return out


def reference_diff(items):
    """Compare the oracle with the experiment's AccuracyMetric over (key, ours, reference)
    triples: max |diff| where both are finite and the reference is not its 1e6 sentinel (C
    worst-q of a class that is active in no image); the other keys are listed (documented
    differences of the oracle)."""
    d, nan_keys, big_keys = 0.0, [], []
    for k, v, w in items:
        if w is None or not math.isfinite(w):
            nan_keys.append(k)
        elif abs(w) > 1e4:
            big_keys.append(k)
        elif v is not None and math.isfinite(v):
            d = max(d, abs(v - w))
    out = {"max_abs_diff": d}
    if nan_keys:
        out["reference_nan"] = nan_keys
    if big_keys:
        out["reference_1e6_sentinel"] = big_keys
    return out


# ------------------------------------------------------------------------------ LiTS (test_medical)
def lits_split(data_dir, num_cases, fold):
    """lits.py get_image_list without its dataset-size asserts: (train, val, validation cases);
    sorted for determinism (the experiment keeps glob's order, which does not change any
    per-case metric)."""
    cases = list(range(num_cases))
    size = num_cases // 5
    val_cases = set(cases[size * fold: size * (fold + 1)]) if fold <= 3 else set(cases[size * fold:])
    files = sorted(glob(f"{data_dir}/lits/train/*.npz"),
                   key=lambda p: tuple(int(t) for t in os.path.basename(p)[:-4].split("_")))
    val = [p for p in files if int(p.split("/")[-1].split("_")[0]) in val_cases]
    train = [p for p in files if p not in val]
    return train, val, sorted(val_cases)


def lits_dataset(LiTS, MedicalDataset, data_dir, dc, image_list):
    """The experiment's LiTS (eval transform: centre Crop + ToTensor + WindowStandardize) on a
    given slice list (its __init__ would assert the full dataset's size)."""
    ds = LiTS.__new__(LiTS)
    MedicalDataset.__init__(
        ds, train=False, data_dir=data_dir, fold=dc["fold"], num_cases=dc["num_cases"],
        in_channels=dc["in_channels"], num_classes=dc["num_classes"], scale_min=dc["scale_min"],
        scale_max=dc["scale_max"], window_low=dc["window_low"], window_high=dc["window_high"],
        crop_size=dc["crop_size"], ignore_index=dc["ignore_index"], reduce_zero_label=dc["reduce_zero_label"],
        image_prefix=dc["image_prefix"], image_suffix=dc["image_suffix"],
        label_prefix=dc["label_prefix"], label_suffix=dc["label_suffix"])
    ds.image_list = list(image_list)
    ds.transform = ds.get_transform()
    return ds


def lits_predictors(pc_rma, pc_ba):
    """(name, kind, params) of argmax and of rankseg_rma / rankseg_ba with the PARAMS of their
    predict yamls."""
    return [("argmax", "argmax", {}),
            ("rankseg_rma", "rankseg_rma", dict(pc_rma.get("PARAMS", {}))),
            ("rankseg_ba", "rankseg_ba", dict(pc_ba.get("PARAMS", {})))]


def add_slice_predictions(per, errors, out, case, fname, lab):
    """File one slice's run_predictors output: per[name][case] gets (fname, pred int64, lab),
    errors[name][fname] the error string."""
    for name, v in out.items():
        if isinstance(v, str):
            errors.setdefault(name, {})[fname] = v
            continue
        per[name].setdefault(case, []).append((fname, v[0].numpy().astype(np.int64), lab))


def lits_results(predictors, per, errors, nc, q, vs_experiment):
    """{name: {errors if any, metrics, per_case}} as test_medical reports: per case
    compute_metrics(ignore_index=num_classes) over its slices, every key averaged over the
    validated cases (metrics None if the predictor produced nothing). vs_experiment(preds,
    labels, metrics) is a case's `vs_experiment_AccuracyMetric` entry."""
    res = {}
    for name, _, _ in predictors:
        entry = {}
        if name in errors:
            entry["errors"] = errors[name]
        if not per[name]:
            entry["metrics"] = None
            res[name] = entry
            continue
        per_case, sums = {}, None
        for case in sorted(per[name]):
            items = per[name][case]
            P = np.stack([p for _, p, _ in items])
            L = np.stack([l for _, _, l in items])
            m = compute_metrics(P, L, nc, ignore_index=nc, q=q)
            per_case[str(case)] = {"slices": [f for f, _, _ in items], "metrics": to_jsonable(m),
                                   "pred_class1_pixels": [int((p == 1).sum()) for _, p, _ in items],
                                   "vs_experiment_AccuracyMetric": vs_experiment(
                                       [p for _, p, _ in items], [l for _, _, l in items], m)}
            sums = dict(m) if sums is None else {k: sums[k] + m[k] for k in sums}
        n = len(per[name])  # test_medical: sum over the validated cases / their number (NaN propagates)
        entry["metrics"] = to_jsonable({k: v / n for k, v in sums.items()})
        entry["per_case"] = per_case
        res[name] = entry
    return res
