#!/usr/bin/env python3
"""Write the end-to-end experiment fixtures (tests/fixtures/exp/).

    /tmp/venv/bin/python scripts/make_exp_fixtures.py [--rma-exp /tmp/rma/exp] [--out tests/fixtures/exp]

Reproduces, on tiny synthetic data and tiny random SegFormers, what the RankSEG-RMA
experiment (ZixunWang/RankSEG-RMA, exp/) computes for
`main.py --test-only --test_yaml test_iou --predict_yaml <argmax|rankseg_rma|rankseg_ba>`:

* PASCAL-VOC-like set (test()): images and labels are read and transformed by the
  experiment's own dataset code (datas/datasets/base_dataset.py BaseDataset.__getitem__
  with its eval transform: Pad(centred, mean colour / 255) + ToTensor + Normalize), the
  prediction is the experiment's own Segmentor.multi_scale_predict / Segmentor.predict
  (their source is lifted out of models/segmentor.py with `ast` and run with a stub whose
  forward() is the HF SegFormer's .logits upsampled like the experiment's SegHead:
  bilinear, align_corners=False, to the crop size), and the predictors are the
  experiment's rankseg_rma.py / rankseg_ba.py, imported from --rma-exp.
* LiTS-like set (test_medical()): NIfTI volumes go through prepare_lits_kits.make_slice
  (imported); a separate small prepared-slice set goes through lits.py
  LiTS.__getitem__ (centre Crop + ToTensor + WindowStandardize; label >>= 1, > 1 -> 2).
* Metrics: scripts/reference_metrics.py compute_metrics (this project's numpy oracle).

Nothing is downloaded.  CPU, one thread, fixed seeds: rerunning gives identical files.
The output folder is built in a temporary directory next to it and then swapped in.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep scripts/ and the (read-only) experiment checkout clean

import ast
import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
import shutil
import tempfile
import textwrap
from glob import glob

import cv2
import nibabel as nib
import numpy as np
import PIL
import scipy
import torch
import torch.nn.functional as F
import transformers
import yaml
from PIL import Image
from transformers import SegformerConfig, SegformerForSemanticSegmentation

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "exp")
SIZE_LIMIT = 1_400_000      # whole folder (bytes)
PROBS_LIMIT = 400 * 1024    # probs/ folder (bytes)

sys.path.insert(0, HERE)
from fixtureutil import (add_slice_predictions, build_dir, deterministic_cpu, experiment_accuracy,  # noqa: E402
                         file_sizes, fixture_parser, lits_dataset, lits_predictors, lits_results, lits_split,
                         reference_diff, run_predictors, swap_in)
from make_model_fixtures import randomize_  # noqa: E402
from reference_metrics import compute_metrics, confusion_counts, to_jsonable  # noqa: E402

# ------------------------------------------------------------------------------ data spec
# (id, (H, W)) in val.txt order (deliberately not sorted)
VOC_IMAGES = [
    ("2009_001285", (150, 200)),
    ("2007_000129", (75, 100)),
    ("2010_002939", (97, 131)),
    ("2007_000033", (120, 90)),   # label entirely 255 -> skipped by every metric
    ("2011_000045", (40, 250)),
    ("2008_000073", (64, 64)),
    ("2007_009346", (33, 47)),    # smaller than the small crop in both dims: one forward
]
VOC_ALL_IGNORE = "2007_000033"
VOC_PROBS_IDS = ["2007_009346", "2008_000073"]  # candidates for probs/ (kept while it fits)
VOC_SMALL_CROP = [48, 64]
# voc_small_ms: voc_small.yaml data with test_ms.yaml (= test_iou.yaml with these INF settings)
VOC_MS_RATIOS = [0.75, 1.0, 1.25]
VOC_MS_FLIP = True
VOC_MS_PROBE_ID = "2007_000129"  # its multi-scale prob map is stored (or probed); else the first scored image
MS_PROBS_LIMIT = 150 * 1024      # ms_probs_<id>.npy only if under this; otherwise expected.json probe values

SEGFORMER_BASE = dict(
    num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
    hidden_sizes=[8, 16, 24, 32], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
    num_attention_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=16,
)
TARGET_LOGIT_STD = 2.5  # std over classes of the logits, averaged over pixels

# LiTS NIfTI cases: case -> (shape x, y, slices), slices holding tumour
LITS_NIFTI = {0: ((24, 20, 5), [1, 2, 4]), 1: ((18, 22, 4), [2])}
# prepared-slice set: 10 cases (5 folds of 2), fold 0 validation = cases 0, 1
LITS_NUM_CASES = 10
LITS_CROP = [32, 36]
# case -> list of (slice index, (H, W), kind); kind "tumour": tumour where the model's class-1
# probability is high (corrupted); "none": no tumour; "weak": a small bright disk on dark
# background with a tumour label in it, where the model's class-1 probability peaks between
# 0.1 and 0.5 (rankseg_rma keeps class 1, rankseg_ba prunes it)
LITS_SLICES = {c: [(3 + 2 * k, (40, 44), "tumour") for k in range(2)] for c in range(LITS_NUM_CASES)}
LITS_SLICES[0] = [(4, (40, 44), "tumour"), (5, (40, 44), "tumour"), (7, (40, 44), "none"), (9, (40, 44), "weak")]
LITS_SLICES[1] = [(10, (28, 44), "tumour"), (11, (28, 44), "tumour")]  # 28 rows: padded, 44 cols: cropped
LITS_SLICES[6] = [(0, (40, 44), "tumour"), (1, (40, 44), "tumour"), (2, (40, 44), "tumour")]

RMA_VARIANTS = [  # name, PARAMS
    ("rankseg_rma", None),  # PARAMS of configs/predict/rankseg_rma.yaml
    ("rankseg_rma_iou", dict(allow_overlap=False, opt_metric="iou", to_nonverlap_method="rma_score")),
    ("rankseg_rma_prob", dict(allow_overlap=False, opt_metric="dice", to_nonverlap_method="prob")),
    ("rankseg_rma_weight_prob", dict(allow_overlap=False, opt_metric="dice", to_nonverlap_method="weight_prob")),
]


# ------------------------------------------------------------------------------ helpers
def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def segmentor_methods(rma):
    """Segmentor.predict / multi_scale_predict, lifted verbatim out of models/segmentor.py
    (the models package itself needs timm, which is not installed)."""
    path = os.path.join(rma, "models", "segmentor.py")
    src = open(path).read()
    tree = ast.parse(src)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Segmentor")
    ns = {"torch": torch, "ceil": math.ceil, "cv2": cv2}
    got = {}
    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in ("predict", "multi_scale_predict"):
            exec(compile(textwrap.dedent(ast.get_source_segment(src, fn)), path, "exec"), ns)
            got[fn.name] = ns[fn.name]
    assert set(got) == {"predict", "multi_scale_predict"}
    return got


def make_ref_segmentor_class(methods):
    class RefSegmentor:
        """Stands in for the experiment's Segmentor: forward() = HF SegFormer .logits
        upsampled to the crop size (SegHead: nn.Upsample(size=crop_size, bilinear,
        align_corners=False)); predict / multi_scale_predict are the experiment's code."""

        predict = methods["predict"]
        multi_scale_predict = methods["multi_scale_predict"]

        def __init__(self, hf, crop_size):
            self.hf = hf
            self.crop_size = tuple(crop_size)
            self.windows = []
            self.batches = []

        def forward(self, x):
            self.windows.append(list(x.shape[2:]))
            self.batches.append(int(x.shape[0]))
            logits = self.hf(pixel_values=x).logits
            up = F.interpolate(logits, size=self.crop_size, mode="bilinear", align_corners=False)
            return up, None

    return RefSegmentor


def window_grid(h, w, crop, stride_rate):
    """Window origins as Segmentor.predict places them (for the record)."""
    ch, cw = crop
    if h == ch and w == cw:
        return [[0, 0]]
    sh, sw = int(math.ceil(ch * stride_rate)), int(math.ceil(cw * stride_rate))
    gh, gw = int(math.ceil(float(h - ch) / sh) + 1), int(math.ceil(float(w - cw) / sw) + 1)
    out = []
    for i in range(gh):
        for j in range(gw):
            eh, ew = min(i * sh + ch, h), min(j * sw + cw, w)
            out.append([eh - ch, ew - cw])
    return out


def ms_scales(h, w, crop, stride_rate, ratios):
    """What Segmentor.multi_scale_predict does per ratio (len(ratios) > 1): the resized size
    (int(h * r), bumped to odd when h is odd), the size after padding to the crop, the windows."""
    out = []
    for r in ratios:
        rh, rw = int(h * r), int(w * r)
        if h % 2 and not rh % 2:
            rh += 1
        if w % 2 and not rw % 2:
            rw += 1
        ph, pw = max(rh, crop[0]), max(rw, crop[1])
        out.append({"ratio": r, "resized_hw": [rh, rw], "padded_hw": [ph, pw],
                    "windows": window_grid(ph, pw, crop, stride_rate)})
    return out


# ------------------------------------------------------------------------------ models
def build_segformer(num_labels, num_channels, seed, calib_inputs, binary_fg_frac=None):
    torch.manual_seed(seed)
    cfg = SegformerConfig(num_channels=num_channels, num_labels=num_labels, **SEGFORMER_BASE)
    model = SegformerForSemanticSegmentation(cfg)
    randomize_(model, seed)
    # scale the classifier so that the class-wise logit spread is ~TARGET_LOGIT_STD
    with torch.no_grad():
        stds = []
        for x in calib_inputs:
            lg = model(pixel_values=x).logits
            stds.append(lg.std(dim=1).mean().item())
        s = TARGET_LOGIT_STD / float(np.mean(stds))
        s = float(np.float32(round(s, 4)))
        model.decode_head.classifier.weight.mul_(s)
        model.decode_head.classifier.bias.mul_(s)
        shift = 0.0
        if num_labels == 2 and binary_fg_frac is not None:
            # shift class 1's bias so that about binary_fg_frac of the pixels prefer class 1
            d = torch.cat([(lg[:, 1] - lg[:, 0]).reshape(-1)
                           for lg in (model(pixel_values=x).logits for x in calib_inputs)])
            shift = float(np.float32(round(float(torch.quantile(d, 1 - binary_fg_frac)), 4)))
            model.decode_head.classifier.bias[1] -= shift
    model.eval()
    return model, {"classifier_scale": s, "class1_bias_shift": shift}


def save_and_reload(model, path):
    model.save_pretrained(path, safe_serialization=True)
    return SegformerForSemanticSegmentation.from_pretrained(path).eval()


# ------------------------------------------------------------------------------ VOC
def smooth_image(rng, h, w):
    """Smooth random colour field + a few shapes + noise (uint8 RGB)."""
    gh, gw = max(2, h // 24), max(2, w // 24)
    base = rng.uniform(0, 255, size=(gh, gw, 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(3):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(h / 8, h / 3), rng.uniform(w / 8, w / 3)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[m] = 0.4 * img[m] + 0.6 * rng.uniform(0, 255, size=3).astype(np.float32)
    img += rng.normal(0, 10, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_label(rng, argmax, num_classes, frac=0.3):
    """argmax (H, W) of the model, corrupted by random blobs until >= frac of the pixels
    changed; then a 255 band at the bottom edge, 255 outlines around two blobs and a few
    scattered 255 pixels."""
    h, w = argmax.shape
    lab = argmax.astype(np.uint8).copy()
    yy, xx = np.mgrid[0:h, 0:w]
    outlines = []
    it = 0
    while (lab != argmax).mean() < frac and it < 500:
        it += 1
        c = int(rng.integers(0, num_classes))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2, max(3, h / 5)), rng.uniform(2, max(3, w / 5))
        if rng.random() < 0.5:
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        lab[m] = c
        if len(outlines) < 2 and m.sum() > 20:
            outlines.append(m)
    for m in outlines:
        er = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        lab[m & ~er] = 255
    band = max(2, h // 20)
    lab[h - band:, :] = 255
    for _ in range(8):
        lab[int(rng.integers(0, h)), int(rng.integers(0, w))] = 255
    return lab


class VOCEval:
    """BaseDataset (eval transform) on the fixture's val list."""

    def __init__(self, mods, data_dir, data_config, ids):
        BaseDataset = mods["base_dataset"].BaseDataset
        dc = data_config
        ds = BaseDataset(train=False, data_dir=data_dir, in_channels=dc["in_channels"],
                         num_classes=dc["num_classes"], scale_min=dc["scale_min"],
                         scale_max=dc["scale_max"], crop_size=dc["crop_size"],
                         ignore_index=dc["ignore_index"], reduce_zero_label=dc["reduce_zero_label"],
                         image_prefix=dc["image_prefix"], image_suffix=dc["image_suffix"],
                         label_prefix=dc["label_prefix"], label_suffix=dc["label_suffix"])
        # PASCALVOC.get_image_list (val branch) without its dataset-size asserts
        ds.image_list = [f"{data_dir}/VOCdevkit/VOC2012/JPEGImages/{idx}.jpg" for idx in ids]
        ds.transform = ds.get_transform()
        self.ds = ds


def overlap_stats(prob, rma_mod, params, resolved, keep):
    """Selections with allow_overlap=True (same taus), and how the resolution went."""
    p = dict(params)
    p["allow_overlap"] = True
    sel, tau = rma_mod.rankseg_rma(prob.clone(), return_tau=True, **p)
    sel = sel[0].reshape(sel.shape[1], -1)            # (C, HW) bool
    cnt = sel.sum(0)
    ov = cnt > 1
    res = resolved.reshape(-1)
    chosen_selected = sel[res, torch.arange(res.numel())]
    # tie split: the cut of a kept class falls inside a run of equal probabilities
    flat = prob[0].reshape(prob.shape[1], -1)
    sp, _ = torch.sort(flat, dim=-1, descending=True)
    ties = 0
    for c in range(flat.shape[0]):
        t = int(tau[0, c])
        if sp[c, 0] > rma_mod.TRUNCATE_PROB and 0 < t < flat.shape[1] and sp[c, t - 1] == sp[c, t]:
            ties += 1
    # if a cut splits a tie run, the selection depends on torch.sort's (unstable) order of
    # equal values: rerun with the pixels permuted and count changed predictions on kept pixels
    tie_changed = None
    if ties:
        g = torch.Generator().manual_seed(1234)
        hw = flat.shape[1]
        keepm = torch.from_numpy(keep.reshape(-1))
        tie_changed = 0
        for _ in range(2):
            perm = torch.randperm(hw, generator=g)
            pp = flat[:, perm].reshape(1, flat.shape[0], 1, hw).contiguous()
            r = rma_mod.rankseg_rma(pp, **params).long().reshape(-1)
            back = torch.empty_like(r)
            back[perm] = r
            tie_changed = max(tie_changed, int(((back != res) & keepm).sum()))
    return {
        "tie_order_changed_kept_pixels": tie_changed,
        "overlap_pixels": int(ov.sum()),
        "unselected_pixels": int((cnt == 0).sum()),
        "overlap_pixels_resolved_to_unselected_class": int((ov & ~chosen_selected).sum()),
        "classes_kept": int((sp[:, 0] > rma_mod.TRUNCATE_PROB).sum()),
        "tau": [int(t) for t in tau[0]],
        "tie_split_classes": ties,
    }


def per_image_scores(pred, label, num_classes, ignore_index):
    """Per kept image: mean over active classes of IoU / Dice (x100), as compute_metrics's
    I metrics define them (multiclass)."""
    tp, fp, fn, act, kept = confusion_counts(pred, label, num_classes, ignore_index)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        dice = 2 * tp / (2 * tp + fp + fn)
    cnt = act.sum(1)
    iou_i = 100 * np.where(act, iou, 0.0).sum(1) / cnt
    dice_i = 100 * np.where(act, dice, 0.0).sum(1) / cnt
    return kept, [float(v) for v in iou_i], [float(v) for v in dice_i]


def max_diff(ours, ref):
    """Compare the oracle with the experiment's AccuracyMetric over the oracle's keys (see
    fixtureutil.reference_diff)."""
    return reference_diff((k, v, ref.get(k)) for k, v in ours.items())


def stack_padded(arrs, fill):
    """Stack 2-D arrays of different sizes, padding at the bottom/right with `fill`
    (an ignore label: padded pixels are dropped by the metrics)."""
    H = max(a.shape[0] for a in arrs)
    W = max(a.shape[1] for a in arrs)
    out = np.full((len(arrs), H, W), fill, dtype=arrs[0].dtype)
    for i, a in enumerate(arrs):
        out[i, :a.shape[0], :a.shape[1]] = a
    return out


def eval_voc(mods, model, data_dir, data_config, test_config, ids, predictors, rma_params, record_probs):
    dc, tc = data_config, test_config
    nc, ign = dc["num_classes"], dc["ignore_index"]
    ev = VOCEval(mods, data_dir, dc, ids).ds
    Ref = mods["RefSegmentor"]
    preds = {name: [] for name, _, _ in predictors}
    errors = {}
    labels, images_info, probs_out, ov = [], [], {}, {}
    for i, idx in enumerate(ids):
        image, label, image_file = ev[i]
        seg = Ref(model, dc["crop_size"])
        with torch.no_grad():
            prob = seg.multi_scale_predict(image.unsqueeze(0), torch.device("cpu"), nc, dc["crop_size"],
                                           tc["INF"]["flip"], tc["INF"]["ratios"], tc["INF"]["stride_rate"],
                                           temperature=1.0).to(torch.device("cpu"))
        h, w = label.shape
        lab = label.numpy().astype(np.int64)
        lab255 = lab.copy()
        lab255[lab == nc] = ign  # undo BaseDataset's 255 -> num_classes mapping
        labels.append(lab255)
        out = run_predictors(prob, mods["rankseg_rma"], mods["rankseg_ba"], predictors)
        for name, v in out.items():
            if isinstance(v, str):
                errors.setdefault(name, {})[idx] = v
                preds[name].append(np.zeros((h, w), np.int64))
            else:
                preds[name].append(v[0].numpy().astype(np.int64))
        pm = prob[0].max(0).values
        multi = len(tc["INF"]["ratios"]) > 1
        if not multi:
            info = {"id": idx, "padded_hw": [h, w],
                    "windows": window_grid(h, w, dc["crop_size"], tc["INF"]["stride_rate"])}
            n_windows = len(info["windows"])
            assert set(seg.batches) == {1}
        else:
            scales = ms_scales(h, w, dc["crop_size"], tc["INF"]["stride_rate"], tc["INF"]["ratios"])
            info = {"id": idx, "padded_hw": [h, w], "scales": scales,
                    "forward_batch": 2 if tc["INF"]["flip"] else 1}
            n_windows = sum(len(sc["windows"]) for sc in scales)
            assert set(seg.batches) == {info["forward_batch"]}
            assert seg.windows == [list(dc["crop_size"])] * n_windows
        info.update({
            "forward_calls": len(seg.windows),
            "prob_max": float(prob.max()), "pixels_max_prob_gt_0.5": int((pm > 0.5).sum()),
            "classes_with_max_prob_gt_0.1": int((prob[0].reshape(nc, -1).max(1).values > 0.1).sum()),
            "argmax_classes": int(len(np.unique(preds["argmax"][-1]))),
        })
        if multi:
            info["prob_sum_minus_pixels"] = float(prob[0].double().sum() - h * w)
        images_info.append(info)
        assert len(seg.windows) == n_windows
        for name, params in rma_params.items():
            if not isinstance(out[name], str):
                ov.setdefault(name, {})[idx] = overlap_stats(prob, mods["rankseg_rma"], params, out[name][0], lab255 != ign)
        if idx in record_probs:
            probs_out[idx] = (prob[0].numpy().astype(np.float32), lab255.copy())
    L = stack_padded(labels, ign)
    res = {}
    for name, _, _ in predictors:
        P = stack_padded(preds[name], 0)
        m = compute_metrics(P, L, nc, ignore_index=ign, q=tc["METRIC"]["q"])
        # the experiment's mapping (ignore -> num_classes, ignore_index=num_classes) is the same
        L2 = L.copy()
        L2[L == ign] = nc
        assert to_jsonable(compute_metrics(P, L2, nc, ignore_index=nc, q=tc["METRIC"]["q"])) == to_jsonable(m)
        kept, iou_i, dice_i = per_image_scores(P, L, nc, ign)
        assert abs(np.mean(iou_i) - m["mIoUI"]) < 1e-9 and abs(np.mean(dice_i) - m["mDiceI"]) < 1e-9
        entry = {"metrics": to_jsonable(m), "image_ids": [ids[k] for k in kept],
                 "per_image_iou": iou_i, "per_image_dice": dice_i,
                 "vs_experiment_AccuracyMetric": max_diff(
                     m, experiment_accuracy(mods["accuracy_metric"].AccuracyMetric, preds[name], labels, nc, ign,
                                            tc["METRIC"]["q"]))}
        if name in errors:
            entry["errors"] = errors[name]
        if name in ov:
            entry["overlap"] = ov[name]
        res[name] = entry
    return res, images_info, probs_out


# ------------------------------------------------------------------------------ LiTS
def lits_prepare(mods, tmp_root, nifti_dir):
    """Run prepare_lits_kits.make_slice on the fixture's NIfTI files (in a temp copy)."""
    data_dir = os.path.join(tmp_root, "prep")
    os.makedirs(os.path.join(data_dir, "lits", "train"))
    for f in sorted(os.listdir(nifti_dir)):
        shutil.copy(os.path.join(nifti_dir, f), os.path.join(data_dir, "lits", f))
    src_files = sorted(glob(f"{data_dir}/lits/volume-*.nii"))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        for src in src_files:
            mods["prepare"].make_slice(src, data_dir, "lits")
    vols = {}
    for src in src_files:
        case = src.split("-")[-1].split(".")[0]
        vols[case] = (np.transpose(nib.load(src).get_fdata(), (2, 0, 1)),
                      np.transpose(nib.load(src.replace("volume", "segmentation")).get_fdata().astype("int8"), (2, 0, 1)))
    out = []
    files = sorted(os.listdir(os.path.join(data_dir, "lits", "train")),
                   key=lambda n: tuple(int(x) for x in n[:-4].split("_")))
    for name in files:
        npz = np.load(os.path.join(data_dir, "lits", "train", name), allow_pickle=True)
        ct, mask = npz["ct"], npz["mask"]
        vals, counts = np.unique(mask, return_counts=True)
        out.append({
            "name": name, "keys": sorted(npz.files),
            "ct_shape": list(ct.shape), "ct_dtype": str(ct.dtype), "ct_sum": float(ct.astype(np.float64).sum()),
            "ct_0_0": float(ct[0, 0]), "ct_100_200": float(ct[100, 200]), "ct_511_511": float(ct[511, 511]),
            "ct_256_256": float(ct[256, 256]), "ct_min": float(ct.min()), "ct_max": float(ct.max()),
            "mask_shape": list(mask.shape), "mask_dtype": str(mask.dtype), "mask_sum": int(mask.astype(np.int64).sum()),
            "mask_counts": {str(int(v)): int(c) for v, c in zip(vals, counts)},
        })
        case, sl = name[:-4].split("_")
        v, sg = vols[case][0][int(sl)], vols[case][1][int(sl)]
        out[-1]["source_slice_shape"] = list(v.shape)
        out[-1]["ct_max_abs_diff_vs_f64_bilinear"] = float(np.abs(ct - bilinear_f64(v, 512, 512)).max())
        out[-1]["mask_equals_floor_nearest"] = bool(np.array_equal(mask, floor_nearest(sg, 512, 512)))
    return out


def bilinear_f64(src, dh, dw):
    """cv2 INTER_LINEAR geometry (half-pixel centres, edge clamp) evaluated in float64."""
    def axis(n_src, n_dst):
        f = (np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5
        i0 = np.floor(f).astype(int)
        a = f - i0
        a[i0 < 0], i0[i0 < 0] = 0.0, 0
        hi = i0 >= n_src - 1
        a[hi], i0[hi] = 0.0, n_src - 1
        return i0, np.minimum(i0 + 1, n_src - 1), a
    y0, y1, ay = axis(src.shape[0], dh)
    x0, x1, ax = axis(src.shape[1], dw)
    top = src[y0][:, x0] * (1 - ax) + src[y0][:, x1] * ax
    bot = src[y1][:, x0] * (1 - ax) + src[y1][:, x1] * ax
    return top * (1 - ay)[:, None] + bot * ay[:, None]


def floor_nearest(src, dh, dw):
    """cv2 INTER_NEAREST: source index floor(d * src / dst) (no half-pixel shift)."""
    yi = np.minimum(np.floor(np.arange(dh) * (src.shape[0] / dh)).astype(int), src.shape[0] - 1)
    xi = np.minimum(np.floor(np.arange(dw) * (src.shape[1] / dw)).astype(int), src.shape[1] - 1)
    return src[yi][:, xi]


def make_nifti(rng, out_dir):
    os.makedirs(out_dir)
    info = {}
    for case, (shape, tumour_slices) in LITS_NIFTI.items():
        X, Y, Z = shape
        xx, yy = np.mgrid[0:X, 0:Y].astype(np.float64)
        vol = np.zeros(shape, np.int16)
        seg = np.zeros(shape, np.int8)
        for z in range(Z):
            ct = -150 + 40 * np.sin(xx / 3.0 + z) + rng.normal(0, 15, (X, Y))
            cx, cy = X / 2 + rng.uniform(-2, 2), Y / 2 + rng.uniform(-2, 2)
            liver = ((xx - cx) / (X / 3)) ** 2 + ((yy - cy) / (Y / 3)) ** 2 <= 1
            ct[liver] = 80 + rng.normal(0, 12, liver.sum())
            s = np.where(liver, 1, 0)
            if z in tumour_slices:
                tx, ty = cx + rng.uniform(-2, 2), cy + rng.uniform(-2, 2)
                tum = ((xx - tx) / 3.0) ** 2 + ((yy - ty) / 2.5) ** 2 <= 1
                ct[tum] = 30 + rng.normal(0, 10, tum.sum())
                s[tum] = 2
            vol[:, :, z] = np.clip(np.rint(ct), -200, 300).astype(np.int16)
            seg[:, :, z] = s
        vimg = nib.Nifti1Image(vol, np.eye(4))
        simg = nib.Nifti1Image(seg, np.eye(4))
        vimg.set_data_dtype(np.int16)
        simg.set_data_dtype(np.int8)
        nib.save(vimg, os.path.join(out_dir, f"volume-{case}.nii"))
        nib.save(simg, os.path.join(out_dir, f"segmentation-{case}.nii"))
        info[str(case)] = {"shape_xyz": list(shape), "volume_dtype": "int16", "segmentation_dtype": "int8",
                           "tumour_slices": tumour_slices,
                           "volume_sum": int(vol.astype(np.int64).sum()),
                           "segmentation_counts": {str(int(v)): int(c) for v, c in zip(*np.unique(seg, return_counts=True))}}
    return info


def make_lits_slices(rng, out_dir, model, dc):
    """Prepared-slice set; the tumour masks of the validation cases follow the model's
    class-1 probability on the centre crop (then corrupted), so metrics are not ~0."""
    tdir = os.path.join(out_dir, "lits", "train")
    os.makedirs(tdir)
    ch, cw = dc["crop_size"]
    lo, hi = dc["window_low"], dc["window_high"]

    def p1_on_slice(ct):
        """The model's class-1 probability on the evaluation's centre crop, mapped back to
        slice coordinates (-1 outside the crop window)."""
        H, W = ct.shape
        pad_h, pad_w = max(ch - H, 0), max(cw - W, 0)
        ph, pw = pad_h // 2, pad_w // 2
        big = cv2.copyMakeBorder(np.float32(ct), ph, pad_h - ph, pw, pad_w - pw, cv2.BORDER_CONSTANT, value=lo)
        oh, ow = (big.shape[0] - ch) // 2, (big.shape[1] - cw) // 2
        x = torch.from_numpy(big[oh:oh + ch, ow:ow + cw].copy())[None, None].clamp(lo, hi)
        x = 2 * (x - lo) / (hi - lo) - 1
        with torch.no_grad():
            lg = model(pixel_values=x).logits
            p1 = F.interpolate(lg, size=(ch, cw), mode="bilinear", align_corners=False).softmax(1)[0, 1].numpy()
        out = np.full((H, W), -1.0)
        ys, xs = np.mgrid[0:ch, 0:cw]
        ys, xs = ys + oh - ph, xs + ow - pw
        ok = (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        out[ys[ok], xs[ok]] = p1[ok]
        return out

    for case in range(LITS_NUM_CASES):
        for (sl, (H, W), kind) in LITS_SLICES[case]:
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
            if kind == "weak":
                ct = -150 + rng.normal(0, 20, (H, W))
                r2 = ((yy - H / 2) ** 2 + (xx - W / 2) ** 2)
                ct[r2 <= 36] = 90
                ct = np.clip(np.rint(ct), -200, 300).astype(np.float64)
                mask = np.where(r2 <= 36, 1, 0).astype(np.int8)
                p1 = p1_on_slice(ct)
                top = np.argsort(-p1.reshape(-1), kind="stable")[:40]
                mask.reshape(-1)[top] = 2
                np.savez_compressed(os.path.join(tdir, f"{case}_{sl}.npz"), ct=ct, mask=mask)
                continue
            ct = -120 + 50 * np.cos(yy / 4.0 + case) + rng.normal(0, 20, (H, W))
            cy, cx = H / 2 + rng.uniform(-3, 3), W / 2 + rng.uniform(-3, 3)
            liver = ((yy - cy) / (H / 2.6)) ** 2 + ((xx - cx) / (W / 2.6)) ** 2 <= 1
            ct[liver] = 90 + 30 * np.sin(xx[liver] / 2.5) + rng.normal(0, 15, liver.sum())
            for _ in range(3):  # darker lesion-like spots
                sy, sx = rng.uniform(0, H), rng.uniform(0, W)
                m = ((yy - sy) / rng.uniform(2, 5)) ** 2 + ((xx - sx) / rng.uniform(2, 5)) ** 2 <= 1
                ct[m] = rng.uniform(-40, 40) + rng.normal(0, 10, m.sum())
            ct = np.clip(np.rint(ct), -200, 300).astype(np.float64)
            mask = liver.astype(np.int8)
            if kind == "tumour":
                # where the model (on the centre crop the evaluation uses) gives class 1 a
                # high probability, then corrupted by blobs
                p1 = p1_on_slice(ct)
                inside = p1 >= 0
                tum = inside & (p1 > np.quantile(p1[inside], 0.7))
                for _ in range(2):
                    sy, sx = rng.uniform(0, H), rng.uniform(0, W)
                    m = ((yy - sy) / 4) ** 2 + ((xx - sx) / 5) ** 2 <= 1
                    tum = (tum & ~m) if rng.random() < 0.5 else (tum | m)
                if not tum.any():
                    tum[H // 2, W // 2] = True
                mask[tum] = 2
            np.savez_compressed(os.path.join(tdir, f"{case}_{sl}.npz"), ct=ct, mask=mask)


def eval_lits(mods, model, data_dir, dc, tc, pc_rma, pc_ba):
    train, val, val_cases = lits_split(data_dir, dc["num_cases"], dc["fold"])
    ds = lits_dataset(mods["lits"].LiTS, mods["medical_dataset"].MedicalDataset, data_dir, dc, val)
    nc = dc["num_classes"]
    Ref = mods["RefSegmentor"]
    predictors = lits_predictors(pc_rma, pc_ba)
    per = {name: {} for name, _, _ in predictors}  # name -> case -> list of (file, pred, label)
    errors = {}
    slices = []
    for i in range(len(ds)):
        image, label, image_file = ds[i]
        case = int(image_file.split("/")[-1].split("_")[0])
        seg = Ref(model, dc["crop_size"])
        with torch.no_grad():
            prob = seg.multi_scale_predict(image.unsqueeze(0), torch.device("cpu"), nc, dc["crop_size"],
                                           tc["INF"]["flip"], tc["INF"]["ratios"], tc["INF"]["stride_rate"])
        out = run_predictors(prob, mods["rankseg_rma"], mods["rankseg_ba"], predictors)
        lab = label.numpy().astype(np.int64)
        name_ = os.path.basename(image_file)
        slices.append({"file": name_, "case": case, "label_counts": {str(int(v)): int(c) for v, c in zip(*np.unique(lab, return_counts=True))},
                       "prob1_max": float(prob[0, 1].max()), "prob1_sum": float(prob[0, 1].sum())})
        add_slice_predictions(per, errors, out, case, name_, lab)
    q, AccuracyMetric = tc["METRIC"]["q"], mods["accuracy_metric"].AccuracyMetric
    res = lits_results(predictors, per, errors, nc, q,
                       lambda P, L, m: max_diff(m, experiment_accuracy(AccuracyMetric, P, L, nc, nc, q)))
    return res, {"val_cases": val_cases, "num_train_slices": len(train), "num_val_slices": len(val),
                 "slices": slices}


# ------------------------------------------------------------------------------ main
def main(argv=None):
    args = fixture_parser(__doc__, DEFAULT_OUT).parse_args(argv)
    rma = os.path.abspath(args.rma_exp)
    out = os.path.abspath(args.out)

    deterministic_cpu()

    sys.path.insert(0, rma)
    import rankseg_ba  # noqa: E402  (the experiment's)
    import rankseg_rma  # noqa: E402
    mods = {
        "rankseg_rma": rankseg_rma, "rankseg_ba": rankseg_ba,
        "transform": __import__("datas.datasets.transform", fromlist=["x"]),
        "base_dataset": __import__("datas.datasets.base_dataset", fromlist=["x"]),
        "medical_dataset": __import__("datas.datasets.medical_dataset", fromlist=["x"]),
        "lits": __import__("datas.datasets.lits", fromlist=["x"]),
        "accuracy_metric": __import__("metrics.accuracy_metric", fromlist=["x"]),
        "prepare": load_module("prepare_lits_kits", os.path.join(rma, "datas", "prepare", "prepare_lits_kits.py")),
    }
    for k in ("rankseg_rma", "rankseg_ba", "base_dataset", "lits", "accuracy_metric"):
        assert os.path.abspath(mods[k].__file__).startswith(rma), (k, mods[k].__file__)
    mods["RefSegmentor"] = make_ref_segmentor_class(segmentor_methods(rma))

    cfgdir = os.path.join(rma, "configs")
    voc_yaml_text = open(os.path.join(cfgdir, "datas", "pascal_voc.yaml")).read()
    lits_yaml_text = open(os.path.join(cfgdir, "datas", "lits_fold0.yaml")).read()
    test_cfg = read_yaml(os.path.join(cfgdir, "test", "test_iou.yaml"))
    test_yaml_text = open(os.path.join(cfgdir, "test", "test_iou.yaml")).read()
    pc_rma = read_yaml(os.path.join(cfgdir, "predict", "rankseg_rma.yaml"))
    pc_ba = read_yaml(os.path.join(cfgdir, "predict", "rankseg_ba.yaml"))
    assert test_cfg["INF"]["ratios"] == [1] and test_cfg["INF"]["flip"] is False

    with build_dir(out, "exp") as tmp:
        scratch = tempfile.mkdtemp(prefix="exp_fixture_scratch_")
        try:
            expected = build(tmp, scratch, mods, voc_yaml_text, lits_yaml_text, test_cfg, pc_rma, pc_ba, rma,
                             test_yaml_text)
            total = swap_in(tmp, out, "exp", SIZE_LIMIT)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # summary
    print(f"wrote {out} ({total} bytes)")
    for ds in ("voc_crop512", "voc_small", "voc_small_ms"):
        for name, e in expected[ds].items():
            if name == "probe":
                continue
            print(f"{ds:12s} {name:24s} mIoUI={e['metrics']['mIoUI']:.4f} mIoUD={e['metrics']['mIoUD']:.4f}")
    for name, e in expected["lits_small"]["predictors"].items():
        m = e.get("metrics")
        print(f"lits_small   {name:24s} " + (f"mIoUI={m['mIoUI']:.4f} mDiceD={m['mDiceD']:.4f}" if m else f"errors={e.get('errors')}"))
    return 0


def build(tmp, scratch, mods, voc_yaml_text, lits_yaml_text, test_cfg, pc_rma, pc_ba, rma, test_yaml_text):
    rng = np.random.default_rng(20240611)
    expected = {}

    # ---------------- models
    g = torch.Generator().manual_seed(7)
    calib3 = [torch.randn((1, 3, 48, 64), generator=g), torch.randn((1, 3, 64, 64), generator=g)]
    # CT-like inputs after WindowStandardize: mostly -1 (air / fat) with brighter smooth parts
    calib1 = []
    for _ in range(4):
        x = torch.randn((1, 1, 8, 9), generator=g) * 0.8 - 0.2
        x = F.interpolate(x, size=(32, 36), mode="bilinear", align_corners=False)
        calib1.append((x + 0.15 * torch.randn((1, 1, 32, 36), generator=g)).clamp(-1, 1))
    m_voc, s_voc = build_segformer(21, 3, 21, calib3)
    m_bin, s_bin = build_segformer(2, 1, 22, calib1, binary_fg_frac=0.3)
    m_voc = save_and_reload(m_voc, os.path.join(tmp, "models", "segformer_voc"))
    m_bin = save_and_reload(m_bin, os.path.join(tmp, "models", "segformer_bin"))

    # ---------------- yamls
    voc_dc = yaml.safe_load(voc_yaml_text)
    assert voc_dc["crop_size"] == [512, 512] and "crop_size: [512, 512]" in voc_yaml_text
    small_text = voc_yaml_text.replace("crop_size: [512, 512]", f"crop_size: [{VOC_SMALL_CROP[0]}, {VOC_SMALL_CROP[1]}]")
    with open(os.path.join(tmp, "voc_crop512.yaml"), "w") as f:
        f.write(voc_yaml_text)
    with open(os.path.join(tmp, "voc_small.yaml"), "w") as f:
        f.write(small_text)
    lits_text = lits_yaml_text.replace("num_cases: 131", f"num_cases: {LITS_NUM_CASES}") \
                              .replace("crop_size: [384, 384]", f"crop_size: [{LITS_CROP[0]}, {LITS_CROP[1]}]")
    assert lits_text != lits_yaml_text and f"num_cases: {LITS_NUM_CASES}" in lits_text and "crop_size: [32" in lits_text
    with open(os.path.join(tmp, "lits_small.yaml"), "w") as f:
        f.write(lits_text)
    small_dc = yaml.safe_load(small_text)
    lits_dc = yaml.safe_load(lits_text)
    assert list(small_dc) == list(voc_dc) and list(lits_dc) == list(yaml.safe_load(lits_yaml_text))

    # ---------------- VOC images
    voc = os.path.join(tmp, "voc")
    root = os.path.join(voc, "VOCdevkit", "VOC2012")
    for d in ("JPEGImages", "SegmentationClassAug", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(root, d))
    ids = [i for i, _ in VOC_IMAGES]
    assert ids != sorted(ids)
    with open(os.path.join(root, "ImageSets", "Segmentation", "val.txt"), "w") as f:
        f.write("".join(i + "\n" for i in ids))
    decoded = {}
    for idx, (h, w) in VOC_IMAGES:
        img = smooth_image(rng, h, w)
        p = os.path.join(root, "JPEGImages", f"{idx}.jpg")
        Image.fromarray(img, "RGB").save(p, quality=90)
        bgr = cv2.imread(p, cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pil = np.asarray(Image.open(p).convert("RGB"))
        decoded[idx] = {"hw": [h, w], "jpeg_sha256": sha256_file(p),
                        "cv2_rgb_sha256": hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest(),
                        "cv2_rgb_sum": int(rgb.astype(np.int64).sum()),
                        "pil_decode_equal": bool(np.array_equal(pil, rgb)),
                        "max_abs_diff_to_source": int(np.abs(rgb.astype(int) - img.astype(int)).max())}

    # labels: the model's argmax (voc_small pipeline), corrupted; written before any evaluation
    ev = VOCEval(mods, voc, small_dc, ids).ds
    ev512 = VOCEval(mods, voc, voc_dc, ids).ds
    label_source = {}
    Ref = mods["RefSegmentor"]
    tc = test_cfg
    for i, (idx, (h, w)) in enumerate(VOC_IMAGES):
        # a placeholder label so that BaseDataset.__getitem__ can read the pair
        lp = os.path.join(root, "SegmentationClassAug", f"{idx}.png")
        Image.fromarray(np.zeros((h, w), np.uint8), "L").save(lp)
        image, label, _ = ev[i]
        # even positions: the voc_small prediction; odd: the voc_crop512 one (so that both
        # evaluations have some images whose labels follow the model)
        src = "voc_small" if i % 2 == 0 else "voc_crop512"
        label_source[idx] = src
        if src == "voc_crop512":
            image, label, _ = ev512[i]
            crop = voc_dc["crop_size"]
        else:
            crop = small_dc["crop_size"]
        seg = Ref(m_voc, crop)
        with torch.no_grad():
            prob = seg.multi_scale_predict(image.unsqueeze(0), torch.device("cpu"), 21, crop,
                                           False, [1], tc["INF"]["stride_rate"])
        H, W = label.shape
        ph, pw = (H - h) // 2, (W - w) // 2  # Pad puts int(pad / 2) before
        am = prob[0].argmax(0).numpy()[ph:ph + h, pw:pw + w]
        lab = np.full((h, w), 255, np.uint8) if idx == VOC_ALL_IGNORE else make_label(rng, am, 21)
        Image.fromarray(lab, "L").save(lp)
        lab_back = cv2.imread(lp, cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(lab_back, lab)
        decoded[idx]["label_png_sha256"] = sha256_file(lp)
        decoded[idx]["label_values"] = sorted(int(v) for v in np.unique(lab))
        decoded[idx]["label_agrees_with_source_argmax"] = float((lab == am).mean())

    # ---------------- VOC evaluation
    predictors = [("argmax", "argmax", {})]
    rma_params = {}
    for name, params in RMA_VARIANTS:
        params = dict(pc_rma["PARAMS"]) if params is None else params
        predictors.append((name, "rankseg_rma", params))
        rma_params[name] = params
    expected["voc_crop512"], info512, _ = eval_voc(mods, m_voc, voc, voc_dc, tc, ids, predictors, rma_params, ())
    expected["voc_small"], info_small, probs = eval_voc(mods, m_voc, voc, small_dc, tc, ids, predictors, rma_params,
                                                        VOC_PROBS_IDS)

    # probs/ for the `probs` dataset (voc_small); keep what fits under PROBS_LIMIT
    pdir = os.path.join(tmp, "probs")
    os.makedirs(pdir)
    used, kept_probs = 0, []
    for idx in VOC_PROBS_IDS:
        pr, lb = probs[idx]
        need = pr.nbytes + lb.astype(np.int64).nbytes + 256
        if used + need > PROBS_LIMIT:
            continue
        np.save(os.path.join(pdir, f"{idx}.npy"), pr)
        np.save(os.path.join(pdir, f"{idx}_label.npy"), lb.astype(np.int64))
        used += need
        kept_probs.append(idx)
    if not kept_probs:
        os.rmdir(pdir)
    else:
        # expected results over just these images (metrics on the stored maps)
        sub = {}
        for name, kind, params in predictors:
            Ps, Ls = [], []
            for idx in kept_probs:
                pr = torch.from_numpy(np.load(os.path.join(pdir, f"{idx}.npy")))[None]
                o = run_predictors(pr, mods["rankseg_rma"], mods["rankseg_ba"], [(name, kind, params)])[name]
                Ps.append(o[0].numpy().astype(np.int64))
                Ls.append(np.load(os.path.join(pdir, f"{idx}_label.npy")))
            P, L = stack_padded(Ps, 0), stack_padded(Ls, 255)
            kept, iou_i, dice_i = per_image_scores(P, L, 21, 255)
            sub[name] = {"metrics": to_jsonable(compute_metrics(P, L, 21, ignore_index=255, q=tc["METRIC"]["q"])),
                         "image_ids": [kept_probs[k] for k in kept], "per_image_iou": iou_i, "per_image_dice": dice_i}
        expected["probs"] = {"image_ids": kept_probs, "num_classes": 21, "ignore_index": 255, "predictors": sub}

    # ---------------- LiTS: NIfTI + prepare
    nd = os.path.join(tmp, "lits_nifti", "lits")
    nifti_info = make_nifti(rng, nd)
    expected["lits_prepare"] = {"nifti": nifti_info, "slices": lits_prepare(mods, scratch, nd)}

    # ---------------- LiTS: prepared slices + evaluation
    ls = os.path.join(tmp, "lits_slices")
    make_lits_slices(rng, ls, m_bin, lits_dc)
    lits_res, lits_info = eval_lits(mods, m_bin, ls, lits_dc, tc, pc_rma, pc_ba)
    expected["lits_small"] = dict(lits_res)
    expected["lits_small_info"] = lits_info

    # ---------------- VOC multi-scale + flip (voc_small data, test_ms.yaml); after everything
    # else so that nothing above (rng draws included) depends on it
    expected["voc_small_ms"], ms_info = voc_small_ms(tmp, mods, m_voc, voc, small_dc, ids, test_yaml_text, pc_rma)

    # ---------------- meta
    expected["meta"] = {
        "generator": "scripts/make_exp_fixtures.py",
        "versions": versions(),
        "test_yaml": "test_iou", "q": tc["METRIC"]["q"], "stride_rate": tc["INF"]["stride_rate"],
        "temperature": 1.0, "batch_size": 1,
        "predictors": {name: ({"METHOD": kind, "PARAMS": params} if params else {"METHOD": kind})
                       for name, kind, params in predictors},
        "lits_predictors": {"argmax": {"METHOD": "argmax"}, "rankseg_rma": pc_rma, "rankseg_ba": pc_ba},
        "model_calibration": {"segformer_voc": s_voc, "segformer_bin": s_bin},
        "voc_label_source": {idx: src for idx, src in label_source.items()},
        "voc_images": decoded,
        "voc_crop512_images": info512,
        "voc_small_images": info_small,
        "notes": NOTES,
    }
    # reorder: predictors' results first, then the rest
    expected["lits_small"] = {"predictors": lits_res, **lits_info}
    del expected["lits_small_info"]
    expected["voc_small_ms_info"] = ms_info  # after meta: the older keys keep their order
    with open(os.path.join(tmp, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, allow_nan=False)
        f.write("\n")
    write_readme(tmp, expected)
    return expected


def voc_small_ms(tmp, mods, model, voc, small_dc, ids, test_yaml_text, pc_rma):
    """voc_small data evaluated with test_ms.yaml (test_iou.yaml with INF.ratios VOC_MS_RATIOS
    and INF.flip VOC_MS_FLIP): Segmentor.multi_scale_predict's multi-ratio branch."""
    old_r, new_r = "ratios: [1]\n", f"ratios: [{', '.join(str(float(r)) for r in VOC_MS_RATIOS)}]\n"
    old_f, new_f = "flip: False\n", f"flip: {VOC_MS_FLIP}\n"
    assert test_yaml_text.count(old_r) == 1 and test_yaml_text.count(old_f) == 1
    ms_text = test_yaml_text.replace(old_r, new_r).replace(old_f, new_f)
    with open(os.path.join(tmp, "test_ms.yaml"), "w") as f:
        f.write(ms_text)
    tc0, tc = yaml.safe_load(test_yaml_text), read_yaml(os.path.join(tmp, "test_ms.yaml"))
    assert tc["INF"]["ratios"] == VOC_MS_RATIOS and tc["INF"]["flip"] is VOC_MS_FLIP
    assert list(tc) == list(tc0) and all(list(tc[k]) == list(tc0[k]) for k in tc)
    assert {k: v for k, v in tc["INF"].items() if k not in ("ratios", "flip")} == \
           {k: v for k, v in tc0["INF"].items() if k not in ("ratios", "flip")}
    assert all(tc[k] == tc0[k] for k in tc if k != "INF")

    params = dict(pc_rma["PARAMS"])
    predictors = [("argmax", "argmax", {}), ("rankseg_rma", "rankseg_rma", params)]
    res, info, probs = eval_voc(mods, model, voc, small_dc, tc, ids, predictors, {"rankseg_rma": params}, ids)

    scored = res["argmax"]["image_ids"]
    pid = VOC_MS_PROBE_ID if VOC_MS_PROBE_ID in scored else scored[0]
    pr = probs[pid][0]
    assert pr.dtype == np.float32 and pr.shape[0] == small_dc["num_classes"]
    buf = io.BytesIO()
    np.save(buf, pr)
    C, H, W = pr.shape
    out_info = {"test_yaml": "test_ms.yaml", "data_yaml": "voc_small.yaml", "ratios": tc["INF"]["ratios"],
                "flip": tc["INF"]["flip"], "stride_rate": tc["INF"]["stride_rate"],
                "predictors": {name: ({"METHOD": kind, "PARAMS": p} if p else {"METHOD": kind})
                               for name, kind, p in predictors},
                "probe_id": pid, "probe_shape": [C, H, W], "probe_npy_bytes": buf.getbuffer().nbytes,
                "images": info}
    if buf.getbuffer().nbytes < MS_PROBS_LIMIT:
        with open(os.path.join(tmp, f"ms_probs_{pid}.npy"), "wb") as f:
            f.write(buf.getvalue())
        out_info["probe_file"] = f"ms_probs_{pid}.npy"
    else:
        # 20 fixed positions: the four corners, the centre, then a seeded draw (its own generator)
        pos = [(0, 0, 0), (C - 1, H - 1, W - 1), (1, 0, W - 1), (2, H - 1, 0), (15, H // 2, W // 2)]
        g = np.random.default_rng(129)
        while len(pos) < 20:
            p = (int(g.integers(0, C)), int(g.integers(0, H)), int(g.integers(0, W)))
            if p not in pos:
                pos.append(p)
        res["probe"] = {
            "id": pid, "shape": [C, H, W], "dtype": "float32",
            "values": [[c, y, x, float(pr[c, y, x])] for c, y, x in pos],
            "class_sums": [float(v) for v in pr.astype(np.float64).sum(axis=(1, 2))],
        }
    return res, out_info


NOTES_MS = [
    "voc_small_ms: voc_small.yaml data + test_ms.yaml (test_iou.yaml with INF.ratios [0.75, 1.0, 1.25], "
    "INF.flip True); Segmentor.multi_scale_predict's multi-ratio branch, batch size 1.",
    "Per ratio: the normalised, padded image (HWC float32) is cv2.resize'd (INTER_LINEAR) to int(h*r) x "
    "int(w*r), each side bumped by 1 when the original side is odd and the result even; if smaller than the "
    "crop it is padded (centred, int(pad/2) before) with the constant [0.485, 0.456, 0.406] - the raw mean, "
    "applied to the already normalised image (not 0).",
    "Flip: predict() gets the batch [img, img.flip(3)] (every window forward has batch 2); prob = "
    "(p[0] + p[1].flip(2)) / 2. predict() is called without temperature (T = 1). The (C, h', w') probability "
    "is cv2.resize'd (INTER_LINEAR, float32, 21 channels) back to the padded image size (padding included), "
    "summed over the ratios in a float32 tensor and divided by len(ratios).",
    "voc_small_ms_info.images[].scales: per ratio the resized size, the size after padding to the crop and "
    "the window origins; prob_sum_minus_pixels = sum(prob) - H*W (float64; ~0).",
]


NOTES = [
    "VOC metrics: pred and label on the padded map (Pad is centred: int(pad/2) before); labels keep 255 "
    "(the experiment maps 255 -> num_classes and uses ignore_index=num_classes: identical results). "
    "Images of different padded sizes are stacked for compute_metrics by padding with label 255.",
    "Sliding window: stride = int(ceil(crop * 0.6667)) (33 x 43 for the 48x64 crop, not 32 x 43); the last "
    "window is shifted back to end at the far edge; logits summed and divided by the count, then "
    "(logits / T).log_softmax(1).exp().",
    "INF.flip is ignored by multi_scale_predict when len(ratios) == 1.",
    "rankseg_rma is called on prob.clone(): with to_nonverlap_method=weight_prob it divides prob in place "
    "(the flatten is a view), which in the experiment also changes the prob later given to the ECE/SCE metrics.",
    "rma_score / prob resolution of overlapping pixels takes the argmax over ALL classes, not only over the "
    "classes that selected the pixel; unselected pixels become class 0.",
    "LiTS: mask int8; Crop pads the label with 255, which cv2 saturates to 127 for int8; 127 >> 1 = 63 -> 2 "
    "(ignore). Labels: 0,1 -> 0 (background incl. liver), 2 -> 1 (tumour).",
    "LiTS metrics: per case compute_metrics(num_classes=2, ignore_index=2); every key averaged over the "
    "validation cases (NaN would propagate).",
    "Ties: in voc_crop512 a few kept classes have their cut inside a run of equal probabilities (the constant "
    "padding gives runs of hundreds of identical values; float32 rounding of the objective puts the argmax "
    "inside; one coincidental 2-pixel tie). torch.sort is not stable, so those selections follow its "
    "introsort order (src/predict/torch_sort.rs reproduces it). overlap.<id>.tie_split_classes counts them; "
    "tie_order_changed_kept_pixels = the most scored pixels that changed when the pixel order was permuted.",
    "The experiment's own AccuracyMetric agrees with compute_metrics to ~1e-5 where both are finite "
    "(vs_experiment_AccuracyMetric); on these tiny sets it would print NaN for the VOC D and C means "
    "(classes absent from every image), 1e6-sentinel garbage for the C worst-q keys, and NaN Acc I / C "
    "keys for LiTS case 0 (0_7 has no tumour but argmax predicts some).",
    "make_slice resizing: cv2 INTER_LINEAR on float64 equals the float64 half-pixel bilinear formula exactly "
    "here; cv2 INTER_NEAREST picks source index floor(d * src / dst) (lits_prepare records both checks).",
    "The experiment evaluates with batch_size from the schedule yaml (8; VOC images all pad to 512x512); "
    "batch 1 is used here, which gives the same per-image results. LiTS slices are listed with glob() "
    "(unordered); sorted here, which changes no per-case metric.",
    "prepare_lits_kits(): for LiTS it looks for <dir>/segmentation.nii.gz, does not find it and rmtree()s the "
    "lits/ folder; only make_slice() is usable (used here). make_slice keeps only slices with a label > 1, "
    "and always resizes to 512x512 (ct: INTER_LINEAR on float64; mask: INTER_NEAREST on int8) because "
    "`shape != [512, 512]` compares a tuple with a list.",
]


def versions():
    import rankseg
    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "rankseg": getattr(rankseg, "__version__", "0.0.8"), "numpy": np.__version__, "cv2": cv2.__version__,
            "scipy": scipy.__version__, "pillow": PIL.__version__, "nibabel": nib.__version__}


def write_readme(tmp, expected):
    files = file_sizes(tmp)
    v = expected["meta"]["versions"]
    probs_ids = expected.get("probs", {}).get("image_ids", [])
    ms = expected["voc_small_ms_info"]
    lines = [
        "# Experiment end-to-end fixtures",
        "",
        "Written by `scripts/make_exp_fixtures.py` (CPU, one thread, fixed seeds; rerunning gives identical",
        "files). Regenerate with:",
        "",
        "    /tmp/venv/bin/python scripts/make_exp_fixtures.py --rma-exp /tmp/rma/exp",
        "",
        "`--rma-exp` is a checkout of ZixunWang/RankSEG-RMA `exp/`: the script imports its `rankseg_rma.py`,",
        "`rankseg_ba.py`, `datas/datasets/{base_dataset,medical_dataset,lits,transform}.py` and",
        "`datas/prepare/prepare_lits_kits.py`, and runs `Segmentor.predict` / `multi_scale_predict` lifted",
        "out of `models/segmentor.py`, so the expected values are what `main.py --test-only --test_yaml",
        "test_iou` computes (batch size 1). Metrics: `scripts/reference_metrics.py` `compute_metrics`.",
        "",
        f"Versions: torch {v['torch']}, transformers {v['transformers']}, rankseg {v['rankseg']} (the",
        f"experiment's own rankseg_rma.py / rankseg_ba.py are used, not the package), numpy {v['numpy']},",
        f"opencv {v['cv2']}, pillow {v['pillow']}, nibabel {v['nibabel']}, scipy {v['scipy']}.",
        "",
        "## Files",
        "- `models/segformer_voc/`: SegformerForSemanticSegmentation, 21 labels, 3 channels; hidden sizes",
        "  [8,16,24,32], depths [1,1,1,1], decoder 16; seeded random weights (make_model_fixtures.randomize_),",
        "  classifier scaled so the class-wise logit std is ~2.5. `save_pretrained(safe_serialization=True)`.",
        "- `models/segformer_bin/`: the same with 2 labels and `num_channels: 1` (CT input).",
        "- `voc/VOCdevkit/VOC2012/`: `JPEGImages/<id>.jpg` (PIL, quality 90), `SegmentationClassAug/<id>.png`",
        "  (8-bit L: the model's argmax - voc_small's for val.txt positions 0, 2, 4, 6, voc_crop512's for 1, 3,",
        "  5 - corrupted by ~30% blobs, plus a 255 bottom band, 255 blob outlines and a few 255 pixels;",
        f"  `{VOC_ALL_IGNORE}` is all 255 and is skipped by every metric), `ImageSets/Segmentation/val.txt`",
        "  (unsorted order). `expected.json` meta.voc_images has the cv2-decoded RGB sha256 per image.",
        "- `voc_crop512.yaml` (= configs/datas/pascal_voc.yaml), `voc_small.yaml` (crop [48, 64]: sliding",
        "  window for large images, padding for small ones), `lits_small.yaml` (lits_fold0.yaml with",
        "  num_cases 10, crop [32, 36]).",
        "- `test_ms.yaml`: configs/test/test_iou.yaml with `INF.ratios: [0.75, 1.0, 1.25]` and `INF.flip: True`",
        "  (every other key and the key order kept); used by expected.json `voc_small_ms`.",
    ] + ([
        f"- `{ms['probe_file']}`: the voc_small_ms probability map (C,H,W) float32 of {ms['probe_id']} on the padded map.",
    ] if "probe_file" in ms else []) + [
        f"- `probs/`: voc_small probability maps (21,H,W) float32 and labels int64 (255 = ignore) on the padded",
        f"  map for {', '.join(probs_ids) if probs_ids else 'no image'} (only what fits in 400 KB);",
        "  expected.json `probs` has the metrics over just these images.",
        "- `lits_nifti/lits/{volume,segmentation}-{0,1}.nii`: int16 HU / int8 labels (0 bg, 1 liver, 2 tumour),",
        "  shapes (x, y, slices) (24,20,5) and (18,22,4). expected.json `lits_prepare`: every npz that",
        "  prepare_lits_kits.make_slice writes (512x512, not stored here): shapes, dtypes, sums, samples, counts.",
        "- `lits_slices/lits/train/<case>_<slice>.npz`: ct float64 (integer HU), mask int8; cases 0..9 (5 folds",
        "  of 2; fold 0 validates cases 0, 1). Case 1's slices are 28x44 (rows padded with -60 / label 255 ->",
        "  ignore, columns centre-cropped); the others 40x44. `0_7.npz` has no tumour (binary I scores 1 when",
        "  neither label nor prediction has class 1); `0_9.npz` is a dark slice with a small bright disk where",
        "  the class-1 probability peaks in (0.1, 0.5]: rankseg_rma keeps class 1 there, rankseg_ba prunes it.",
        "  Tumour masks of the other validation slices follow the model's class-1 probability (corrupted).",
        "- `expected.json`: `voc_crop512` / `voc_small` -> predictor -> {metrics, image_ids (scored, val.txt",
        "  order), per_image_iou, per_image_dice (x100, mean over classes in the label), overlap (rankseg_rma*:",
        "  per image, pixels selected by >1 class, unselected pixels, tau per class, tie splits)};",
        "  predictors argmax, rankseg_rma (dice, rma_score = configs/predict/rankseg_rma.yaml),",
        "  rankseg_rma_iou, rankseg_rma_prob, rankseg_rma_weight_prob. `lits_small.predictors` -> argmax /",
        "  rankseg_rma / rankseg_ba -> {metrics (mean over validation cases), per_case, errors if any}.",
        "  `meta`: versions, params, window grids, notes on the reference code's behaviour.",
        "- `expected.json` `voc_small_ms` -> argmax / rankseg_rma (dice, rma_score) -> the same entries as",
        "  `voc_small` (metrics, image_ids, per_image_iou, per_image_dice, vs_experiment_AccuracyMetric,",
        "  overlap for rankseg_rma), computed with `test_ms.yaml` (multi-scale + flip)."
        + ("" if "probe" not in expected["voc_small_ms"] else
           f" `voc_small_ms.probe`: its probability map of {ms['probe_id']} (shape {ms['probe_shape']},"
           f" {ms['probe_npy_bytes']} B as .npy, over {MS_PROBS_LIMIT // 1024} KB, so not stored) probed:"
           " `values` = [class, y, x, float32 value] at 20 fixed positions (padded map coordinates), `class_sums`"
           " = per-class float64 sums."),
        "  `voc_small_ms_info`: the test yaml, ratios, flip, predictors, probe id, per-image scales / windows.",
        "",
        "## Notes",
    ] + [f"- {n}" for n in NOTES + NOTES_MS] + ["", "## Sizes", ""] + [f"- `{p}`: {s} B" for p, s in files if p != "README.md"] + [""]
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
