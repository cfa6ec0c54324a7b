#!/usr/bin/env python3
"""Stress-compare `rankseg exp` (probs dataset) with the RankSEG-RMA experiment's predictors.

    /tmp/venv/bin/python scripts/stress_exp_predictors.py [--bin target/debug/rankseg]
        [--rma-exp /tmp/rma/exp] [--out results/stress]

Builds seeded random probability maps larger than the unit fixtures (softmax of smooth
random logits at several sharpness levels, blocky and quantised logits with many exactly
tied values, classes pushed under the 0.1 / 0.5 prune bounds, and two-class maps with a tiny
foreground so the experiment's BA takes its TRNA loop), writes them as a `probs` folder per
(C, predictor family), runs `rankseg exp --test-only ... save_pred: True` once per
(C, predictor), and compares every `<id>_pred.png` with the experiment's own
`rankseg_rma(...)` / `rankseg_ba(...)` (exp/rankseg_rma.py, exp/rankseg_ba.py, imported
read-only), run with torch on one CPU thread.

Writes `<out>/exp_predictors.md` and `<out>/exp_predictors.json`. Nothing is downloaded.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep the (read-only) experiment checkout clean

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

MULTI_PREDICTORS = {
    # name of configs/predict/<name>.yaml: oracle kwargs for rankseg_rma
    "rankseg_rma": dict(opt_metric="dice", to_nonverlap_method="rma_score"),
    "rankseg_rma_iou": dict(opt_metric="iou", to_nonverlap_method="rma_score"),
    "rankseg_rma_prob": dict(opt_metric="dice", to_nonverlap_method="prob"),
    "rankseg_rma_weight_prob": dict(opt_metric="dice", to_nonverlap_method="weight_prob"),
}
BINARY_PREDICTORS = ["rankseg_rma", "rankseg_ba"]


# ----------------------------------------------------------------------------- maps

def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(0, keepdims=True)
    e = np.exp(z)
    return e / e.sum(0, keepdims=True)


def smooth_logits(rng, c, h, w, sigma, sharp):
    noise = rng.standard_normal((c, h, w))
    lg = gaussian_filter(noise, sigma=(0, sigma, sigma), mode="reflect")
    lg /= lg.std() + 1e-12
    return lg * sharp


def blocky_logits(rng, c, h, w, block, sharp):
    gh, gw = -(-h // block), -(-w // block)
    lg = rng.standard_normal((c, gh, gw)) * sharp
    return np.repeat(np.repeat(lg, block, 1), block, 2)[:, :h, :w]


def squash_class(p: np.ndarray, c: int, target_max: float) -> np.ndarray:
    """Scale class c so its max is target_max, giving the removed mass to the others."""
    p = p.astype(np.float64).copy()
    pc = p[c]
    scale = target_max / pc.max()
    new = pc * scale
    rest = 1.0 - pc
    factor = np.where(rest > 0, (1.0 - new) / np.maximum(rest, 1e-300), 1.0)
    p *= factor[None]
    p[c] = new
    return p


def make_map(rng, c, h, w, kind):
    """Returns float32 (C, H, W) probabilities."""
    if kind == "smooth_soft":
        p = softmax(smooth_logits(rng, c, h, w, 6.0, 1.5))
    elif kind == "smooth_mid":
        p = softmax(smooth_logits(rng, c, h, w, 4.0, 4.0))
    elif kind == "smooth_sharp":
        p = softmax(smooth_logits(rng, c, h, w, 3.0, 12.0))
    elif kind == "blocky_ties":
        # 8x8 blocks of identical vectors: long runs of exactly equal values per class
        p = softmax(blocky_logits(rng, c, h, w, 8, 3.0))
    elif kind == "quantised_ties":
        # logits rounded to a coarse grid: few distinct vectors (C=2, 3), many ties
        lg = smooth_logits(rng, c, h, w, 4.0, 3.0)
        p = softmax(np.round(lg * 1.0) / 1.0)
    elif kind == "low_max":
        # some classes with max < 0.1, some with max in (0.1, 0.5)
        p = softmax(smooth_logits(rng, c, h, w, 4.0, 4.0))
        order = rng.permutation(c)
        n_low = max(1, c // 4)
        for k in order[:n_low]:
            p = squash_class(p, int(k), float(rng.uniform(0.03, 0.095)))
        for k in order[n_low:n_low + max(1, c // 4)]:
            p = squash_class(p, int(k), float(rng.uniform(0.15, 0.45)))
    elif kind == "bound_max":
        # classes whose float32 max is exactly 0.1 / 0.5 (the prune comparisons are `<=`)
        p = softmax(smooth_logits(rng, c, h, w, 4.0, 4.0))
        order = rng.permutation(c)
        p = squash_class(p, int(order[0]), 0.1)
        p = squash_class(p, int(order[1]), 0.5)
        p = p.astype(np.float32)
        for k, t in ((order[0], np.float32(0.1)), (order[1], np.float32(0.5))):
            i = np.unravel_index(np.argmax(p[k]), p[k].shape)
            p[(k, *i)] = t
        return p
    elif kind == "bin_tiny_fg":
        # two classes, foreground = a few small confident blobs on a ~1e-5 floor:
        # sum of channel 1 < 50 -> the BA's TRNA loop
        fg = np.abs(gaussian_filter(rng.standard_normal((h, w)), 4.0)) * 1e-4 + 1e-6
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            r = rng.uniform(1.0, 2.2)
            amp = rng.uniform(0.6, 0.97)
            fg = np.maximum(fg, amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
        p = np.stack([1.0 - fg, fg])
    elif kind == "bin_tiny_fg_ties":
        fg = np.full((h, w), 2e-5)
        bs = 4
        for _ in range(int(rng.integers(2, 4))):
            y0, x0 = int(rng.integers(0, h - bs)), int(rng.integers(0, w - bs))
            fg[y0:y0 + bs, x0:x0 + bs] = np.float32(rng.choice([0.55, 0.7, 0.9]))
        p = np.stack([1.0 - fg, fg])
    elif kind == "bin_fg_half":
        # foreground max exactly 0.5 in float32 (BA prune is `sorted_prob[0] <= .5`)
        lg = smooth_logits(rng, 2, h, w, 5.0, 3.0)
        p = softmax(lg).astype(np.float32)
        p[1] = np.minimum(p[1], np.float32(0.5))
        p[0] = np.float32(1.0) - p[1]
        return p
    else:
        raise ValueError(kind)
    return p.astype(np.float32)


def make_label(rng, p):
    noisy = p.astype(np.float64) + rng.uniform(0, 0.3, size=p.shape)
    return noisy.argmax(0).astype(np.int64)  # never 255, so the pred PNG is the whole prediction


def build_cases():
    """(group, id, C, H, W, kind, seed) for every map."""
    cases = []
    seed = 1000
    for c in (3, 21):
        kinds = ["smooth_soft", "smooth_mid", "smooth_sharp", "blocky_ties", "quantised_ties", "low_max"]
        for (h, w) in ((64, 96), (128, 128), (200, 150)):
            for kind in kinds:
                seed += 1
                cases.append((f"multi{c}", f"c{c}_{h}x{w}_{kind}", c, h, w, kind, seed))
        seed += 1
        cases.append((f"multi{c}", f"c{c}_96x96_bound_max", c, 96, 96, "bound_max", seed))
    for (h, w) in ((96, 96), (256, 256), (384, 384)):
        for kind in ("smooth_soft", "smooth_mid", "smooth_sharp", "quantised_ties", "blocky_ties"):
            seed += 1
            cases.append(("bin", f"c2_{h}x{w}_{kind}", 2, h, w, kind, seed))
    for (h, w, kind) in ((96, 96, "bin_tiny_fg"), (256, 256, "bin_tiny_fg"), (384, 384, "bin_tiny_fg"),
                         (384, 384, "bin_tiny_fg"), (256, 256, "bin_tiny_fg_ties"),
                         (128, 128, "bin_fg_half")):
        seed += 1
        cases.append(("bin", f"c2_{h}x{w}_{kind}_{seed}", 2, h, w, kind, seed))
    return cases


# ----------------------------------------------------------------------------- oracle

def oracle_predict(rma_mod, ba_mod, predictor, prob: np.ndarray):
    t = torch.from_numpy(prob)[None].clone()
    if predictor == "rankseg_ba":
        pred, tau, _ = ba_mod.rankseg_ba(t, allow_overlap=False, return_tau=True)
        return pred[0].long().numpy(), tau[0].long().numpy()
    kw = MULTI_PREDICTORS[predictor]
    pred, tau = rma_mod.rankseg_rma(t, allow_overlap=False, return_tau=True, **kw)
    return pred[0].long().numpy(), tau[0].long().numpy()


def diagnose(prob, ours, theirs, tau, predictor):
    """Per-class volumes and what sits at the oracle's cut for a differing map."""
    c = prob.shape[0]
    binary = c == 2
    classes = [1] if binary else list(range(c))
    out = {"classes": []}
    diff = ours != theirs
    for k in classes:
        vo, vt = int((ours == k).sum()), int((theirs == k).sum())
        row = prob[k].reshape(-1)
        srt = np.sort(row)[::-1]
        tk = int(tau[0] if binary else tau[k])
        info = {
            "class": k, "vol_ours": vo, "vol_oracle": vt,
            "max_prob": float(srt[0]),
            "oracle_tau": tk,
            "pixels_differing_in_class": int((diff & ((ours == k) | (theirs == k))).sum()),
        }
        if 0 < tk < row.size:
            info["cut_prob"] = float(srt[tk - 1])
            info["next_prob"] = float(srt[tk])
            info["tie_at_cut"] = bool(srt[tk - 1] == srt[tk])
            info["tie_run_at_cut"] = int((row == srt[tk - 1]).sum())
        out["classes"].append(info)
    if not binary:
        dp = np.argwhere(diff)
        if len(dp):
            a, b = ours[diff], theirs[diff]
            pa = prob[a, dp[:, 0], dp[:, 1]]
            pb = prob[b, dp[:, 0], dp[:, 1]]
            out["diff_pixels_equal_prob"] = int((pa == pb).sum())
            out["example_pixel"] = {"yx": dp[0].tolist(), "ours": int(a[0]), "oracle": int(b[0]),
                                    "prob": prob[:, dp[0][0], dp[0][1]].tolist()}
    out["max_abs_volume_diff"] = max(abs(r["vol_ours"] - r["vol_oracle"]) for r in out["classes"])
    return out


# ----------------------------------------------------------------------------- driver

def machine_info():
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "rankseg_binary_threads": "default (not limited; env RAYON_NUM_THREADS="
                                  + os.environ.get("RAYON_NUM_THREADS", "unset") + ")",
    }


def main():
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(root / "target/debug/rankseg"))
    ap.add_argument("--rma-exp", default="/tmp/rma/exp")
    ap.add_argument("--out", default=str(root / "results/stress"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    sys.path.insert(0, args.rma_exp)
    import rankseg_ba as ba_mod  # noqa: E402
    import rankseg_rma as rma_mod  # noqa: E402

    binary = Path(args.bin).resolve()
    cases = build_cases()
    t_start = time.time()
    records = []
    runs = []
    with tempfile.TemporaryDirectory(prefix="stress_exp_") as tmp:
        tmp = Path(tmp)
        test_yaml = tmp / "test_iou_save.yaml"
        text = (root / "configs/test/test_iou.yaml").read_text()
        assert "save_pred: False" in text
        test_yaml.write_text(text.replace("save_pred: False", "save_pred: True"))

        groups = {}
        for case in cases:
            groups.setdefault(case[0], []).append(case)
        for group, gcases in groups.items():
            c = gcases[0][2]
            data_dir = tmp / group
            (data_dir / "probs").mkdir(parents=True)
            maps = {}
            for (_, cid, cc, h, w, kind, seed) in gcases:
                rng = np.random.default_rng(seed)
                p = make_map(rng, cc, h, w, kind)
                assert p.shape == (cc, h, w) and p.dtype == np.float32
                np.save(data_dir / "probs" / f"{cid}.npy", p)
                np.save(data_dir / "probs" / f"{cid}_label.npy", make_label(rng, p))
                maps[cid] = (p, kind, h, w)
            data_yaml = tmp / f"{group}.yaml"
            data_yaml.write_text(
                f"dataset: probs\nnum_classes: {c}\nignore_index: 255\n"
                "image_prefix: /probs/\nimage_suffix: .npy\n"
                "label_prefix: /probs/\nlabel_suffix: _label.npy\n")
            predictors = BINARY_PREDICTORS if c == 2 else list(MULTI_PREDICTORS)
            for pred_name in predictors:
                out_dir = tmp / f"out_{group}_{pred_name}"
                cmd = [str(binary), "exp", "--test-only", "--data_dir", str(data_dir),
                       "--data_yaml", str(data_yaml),
                       "--predict_yaml", str(root / "configs/predict" / f"{pred_name}.yaml"),
                       "--test_yaml", str(test_yaml), "--output_dir", str(out_dir), "--force"]
                t0 = time.time()
                res = subprocess.run(cmd, capture_output=True, text=True)
                ours_s = time.time() - t0
                if res.returncode != 0:
                    print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"rankseg exp failed for {group}/{pred_name}")
                pred_dirs = [d for d in out_dir.iterdir() if d.is_dir() and d.name.endswith(".pred")]
                assert len(pred_dirs) == 1, pred_dirs
                oracle_s = 0.0
                for cid, (p, kind, h, w) in maps.items():
                    ours = np.array(Image.open(pred_dirs[0] / f"{cid}_pred.png")).astype(np.int64)
                    t1 = time.time()
                    theirs, tau = oracle_predict(rma_mod, ba_mod, pred_name, p)
                    dt = time.time() - t1
                    oracle_s += dt
                    assert ours.shape == theirs.shape == (h, w), (ours.shape, theirs.shape)
                    nd = int((ours != theirs).sum())
                    rec = {"predictor": pred_name, "C": c, "id": cid, "kind": kind, "H": h, "W": w,
                           "differing_pixels": nd, "oracle_seconds": round(dt, 3)}
                    if c == 2:
                        rec["fg_mean"] = float(p[1].astype(np.float64).sum())
                        rec["fg_max"] = float(p[1].max())
                    if nd:
                        rec["diagnosis"] = diagnose(p, ours, theirs, tau, pred_name)
                    records.append(rec)
                    print(f"{pred_name:24s} C={c:2d} {cid:40s} diff={nd}", flush=True)
                runs.append({"group": group, "predictor": pred_name, "C": c, "maps": len(maps),
                             "rankseg_exp_seconds": round(ours_s, 2),
                             "oracle_seconds": round(oracle_s, 2)})

    # summary per (predictor, C)
    summary = []
    for run in runs:
        recs = [r for r in records if r["predictor"] == run["predictor"] and r["C"] == run["C"]]
        bad = [r for r in recs if r["differing_pixels"]]
        summary.append({
            "predictor": run["predictor"], "C": run["C"], "maps": len(recs),
            "maps_differing": len(bad),
            "differing_pixels": sum(r["differing_pixels"] for r in recs),
            "pixels_compared": sum(r["H"] * r["W"] for r in recs),
            "max_abs_volume_diff": max((r["diagnosis"]["max_abs_volume_diff"] for r in bad), default=0),
            "rankseg_exp_seconds": run["rankseg_exp_seconds"],
            "oracle_seconds": run["oracle_seconds"],
        })

    bin_stat = binary.stat()
    info = {
        "binary": str(binary),
        "binary_mtime_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bin_stat.st_mtime)),
        "rma_exp": args.rma_exp,
        "machine": machine_info(),
        "total_seconds": round(time.time() - t_start, 1),
        "maps": len(cases),
        "summary": summary,
        "runs": runs,
        "records": records,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "exp_predictors.json").write_text(json.dumps(info, indent=1) + "\n")

    m = info["machine"]
    lines = [
        "# `rankseg exp` (probs) vs the RankSEG-RMA experiment's predictors",
        "",
        f"Generated by `scripts/stress_exp_predictors.py`: {len(cases)} seeded maps "
        "(smooth softmax at 3 sharpness levels, blocky and quantised logits with exact ties, "
        "classes squashed under / exactly at the 0.1 and 0.5 prune bounds, two-class maps with "
        "a tiny foreground for the BA's TRNA loop). Oracle: `/tmp/rma/exp` `rankseg_rma(prob[None], "
        "allow_overlap=False, ...)` and `rankseg_ba(prob[None], allow_overlap=False)`, torch on 1 thread.",
        "",
        f"Machine: {m['cpu_model']} ({m['logical_cpus']} logical CPUs), torch {m['torch_version']} "
        f"(num_threads={m['torch_num_threads']}), binary `{info['binary']}` (mtime {info['binary_mtime_utc']}), "
        f"total {info['total_seconds']} s.",
        "",
        "| predictor | C | maps | maps differing | differing pixels / compared | max abs volume diff per class | exp s | oracle s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(f"| {s['predictor']} | {s['C']} | {s['maps']} | {s['maps_differing']} | "
                     f"{s['differing_pixels']} / {s['pixels_compared']} | {s['max_abs_volume_diff']} | "
                     f"{s['rankseg_exp_seconds']} | {s['oracle_seconds']} |")
    bad = [r for r in records if r["differing_pixels"]]
    if bad:
        lines += ["", "## Differing maps", ""]
        for r in bad:
            d = r["diagnosis"]
            cls = [x for x in d["classes"] if x["vol_ours"] != x["vol_oracle"] or x["pixels_differing_in_class"]]
            desc = "; ".join(
                f"class {x['class']}: vol ours {x['vol_ours']} vs oracle {x['vol_oracle']}, "
                f"max prob {x['max_prob']:.6g}, oracle tau {x['oracle_tau']}"
                + (f", tie at cut ({x['tie_run_at_cut']} equal values)" if x.get("tie_at_cut") else "")
                for x in cls[:4])
            lines.append(f"- {r['predictor']} `{r['id']}` ({r['H']}x{r['W']}): {r['differing_pixels']} px; {desc}")
    else:
        lines += ["", "No map differs."]
    (out / "exp_predictors.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
