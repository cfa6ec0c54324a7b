#!/usr/bin/env python3
"""Times the whole evaluation `rankseg exp --test-only` (images on disk -> model forward ->
predictor -> metrics) against the RankSEG-RMA experiment's own Python test loop on the same
files: PASCAL VOC-like data, a SegFormer-B0-sized model with random weights, predictors
argmax and rankseg_rma.

    /tmp/venv/bin/python scripts/bench_exp_pipeline.py [--rma-exp /tmp/rma/exp] \
        [--rust-bin target/release/rankseg] [--out results/bench/exp] [--images 8] [--repeats 3]

Setup (in a temporary folder, seeded):
* model: transformers.SegformerConfig() defaults (MiT-b0: hidden sizes [32,64,160,256],
  depths [2,2,2,2], decoder 256) with 21 labels; weights seeded random
  (make_model_fixtures.randomize_), the classifier scaled so that the class-wise logit std is
  ~2.5; save_pretrained(safe_serialization=True).
* data: VOCdevkit/VOC2012/JPEGImages/<id>.jpg (500x375 / 375x500 smooth random content, PIL
  quality 90), SegmentationClassAug/<id>.png (the model's argmax corrupted by blobs, with 255
  outlines / bottom band / scattered pixels; make_exp_fixtures.make_label),
  ImageSets/Segmentation/val.txt.

Python side (a subprocess of this script, so that its wall time counts interpreter start,
imports and model loading like ours): the experiment's test() loop for --test_yaml test_iou:
its BaseDataset eval transform (cv2 read, Pad to 512x512 with the mean colour, ToTensor,
Normalize), DataLoader batch size 8 (configs/schedules/*.yaml; num_workers 0 here instead of
the schedule's 4, on a 2-core machine), Segmentor.multi_scale_predict / predict lifted out of
models/segmentor.py with forward() = HF SegFormer .logits upsampled bilinear
(align_corners=False) to 512x512, then (logits / T).log_softmax(1).exp(); predictor
prob.argmax(1) or the experiment's rankseg_rma(prob, allow_overlap=False, opt_metric='dice',
to_nonverlap_method='rma_score'); metrics: scripts/reference_metrics.py compute_metrics
(ignore 255, q 10) instead of the experiment's MetricGroup. torch.set_num_threads(2),
torch.no_grad(). Stage times with time.perf_counter.

Ours: `rankseg exp --test-only --data_yaml pascal_voc --test_yaml test_iou --model_checkpoint
MODEL --predict_yaml P`: process wall time, and the forward / predict / metric seconds it
records in run.json. Each side and predictor is run --repeats times, interleaved; medians.
Writes exp_pipeline.md and exp_pipeline.json.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep scripts/ and the experiment checkout clean

import argparse
import json
import os
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

NUM_CLASSES = 21
CROP = [512, 512]
BATCH_SIZE = 8  # configs/schedules/*.yaml batch_size
THREADS = 2
RMA_PARAMS = dict(allow_overlap=False, opt_metric="dice", to_nonverlap_method="rma_score")
PREDICTORS = ["argmax", "rankseg_rma"]
TARGET_LOGIT_STD = 2.5
VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
             "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor"]


# ------------------------------------------------------------------------------ Python side
def experiment_modules(rma):
    """The experiment's BaseDataset, rankseg_rma and Segmentor.predict / multi_scale_predict."""
    sys.path.insert(0, rma)
    from make_exp_fixtures import make_ref_segmentor_class, segmentor_methods
    from rankseg_rma import rankseg_rma  # the experiment's
    base_dataset = __import__("datas.datasets.base_dataset", fromlist=["x"])
    for m in (base_dataset, sys.modules["rankseg_rma"]):
        assert os.path.abspath(m.__file__).startswith(os.path.abspath(rma)), m.__file__
    return base_dataset.BaseDataset, rankseg_rma, make_ref_segmentor_class(segmentor_methods(rma))


def voc_dataset(BaseDataset, data_dir, ids):
    """PASCALVOC (eval) as configs/datas/pascal_voc.yaml builds it, with the val list of
    this set (PASCALVOC.get_image_list asserts VOC's real dataset sizes)."""
    ds = BaseDataset(train=False, data_dir=data_dir, in_channels=3, num_classes=NUM_CLASSES,
                     scale_min=0.5, scale_max=2.0, crop_size=CROP, ignore_index=255,
                     reduce_zero_label=False, image_prefix="/JPEGImages/", image_suffix=".jpg",
                     label_prefix="/SegmentationClassAug/", label_suffix=".png")
    ds.image_list = [f"{data_dir}/VOCdevkit/VOC2012/JPEGImages/{i}.jpg" for i in ids]
    ds.transform = ds.get_transform()
    return ds


def python_worker(args):
    """One run of the experiment's pipeline; writes its timings and metrics as JSON."""
    t_start = time.perf_counter()
    import cv2
    import numpy as np
    import torch
    from transformers import SegformerForSemanticSegmentation
    from reference_metrics import compute_metrics

    cv2.setNumThreads(0)  # as the experiment's test.py / base_dataset.py
    cv2.ocl.setUseOpenCL(False)
    torch.set_num_threads(THREADS)
    BaseDataset, rankseg_rma, RefSegmentor = experiment_modules(args.rma_exp)
    t_imported = time.perf_counter()

    hf = SegformerForSemanticSegmentation.from_pretrained(args.model).eval()
    seg = RefSegmentor(hf, CROP)
    ids = open(f"{args.data}/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read().split()
    loader = torch.utils.data.DataLoader(voc_dataset(BaseDataset, args.data, ids), batch_size=BATCH_SIZE,
                                         shuffle=False, num_workers=0, drop_last=False)
    t_loaded = time.perf_counter()
    forward = predict = metric = 0.0
    preds, labels = [], []
    with torch.no_grad():
        for image, label, _ in loader:
            t0 = time.perf_counter()
            prob = seg.multi_scale_predict(image, torch.device("cpu"), NUM_CLASSES, CROP, False, [1], 0.6667,
                                           temperature=1.0).to(torch.device("cpu"))
            t1 = time.perf_counter()
            if args.predict == "argmax":
                pred = prob.argmax(1)
            else:
                pred = rankseg_rma(prob, **RMA_PARAMS).long()
            t2 = time.perf_counter()
            lab = label.numpy().astype(np.int64)
            lab[lab == NUM_CLASSES] = 255  # undo BaseDataset's 255 -> num_classes
            preds.append(pred.numpy().astype(np.int64))
            labels.append(lab)
            t3 = time.perf_counter()
            forward += t1 - t0
            predict += t2 - t1
            metric += t3 - t2
    t0 = time.perf_counter()
    m = compute_metrics(np.concatenate(preds), np.concatenate(labels), NUM_CLASSES, ignore_index=255, q=10)
    t_end = time.perf_counter()
    metric += t_end - t0
    out = {"forward": forward, "predict": predict, "metric": metric,
           "import": t_imported - t_start, "load_model": t_loaded - t_imported,
           "loop_total": t_end - t_loaded, "in_process_total": t_end - t_start,
           "images": len(ids), "torch_threads": torch.get_num_threads(),
           "mIoUI": m["mIoUI"], "mDiceI": m["mDiceI"], "mIoUD": m["mIoUD"], "Acc": m["Acc"]}
    with open(args.result, "w") as f:
        json.dump(out, f)


# ------------------------------------------------------------------------------ setup
def build_model(path, data_dir, ids, seed, rma):
    import numpy as np
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    from make_model_fixtures import randomize_

    torch.manual_seed(seed)
    cfg = SegformerConfig(num_labels=NUM_CLASSES, id2label=dict(enumerate(VOC_NAMES)),
                          label2id={n: i for i, n in enumerate(VOC_NAMES)})
    model = SegformerForSemanticSegmentation(cfg)
    randomize_(model, seed)
    model.eval()
    BaseDataset, _, _ = experiment_modules(rma)
    ds = voc_dataset(BaseDataset, data_dir, ids)
    x = torch.stack([ds[i][0] for i in range(min(2, len(ids)))])
    with torch.no_grad():
        s = TARGET_LOGIT_STD / float(model(pixel_values=x).logits.std(dim=1).mean())
        model.decode_head.classifier.weight.mul_(s)
        model.decode_head.classifier.bias.mul_(s)
    model.save_pretrained(path, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))
    return model, {"parameters": int(params), "safetensors_bytes": int(size), "classifier_scale": s,
                   "hidden_sizes": cfg.hidden_sizes, "depths": cfg.depths,
                   "decoder_hidden_size": cfg.decoder_hidden_size}


def build_data(data_dir, model_dir, n, seed, rma):
    """Images first, then labels from the (saved) model's argmax on the experiment's input."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from make_exp_fixtures import make_label, smooth_image

    rng = np.random.default_rng(seed)
    voc = os.path.join(data_dir, "VOCdevkit", "VOC2012")
    for d in ("JPEGImages", "SegmentationClassAug", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(voc, d))
    ids, shapes = [], []
    for k in range(n):
        idx = f"2012_{k + 1:06d}"
        h, w = (375, 500) if k % 3 != 2 else (500, 375)
        Image.fromarray(smooth_image(rng, h, w)).save(os.path.join(voc, "JPEGImages", f"{idx}.jpg"), quality=90)
        ids.append(idx)
        shapes.append((h, w))
    with open(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    # placeholder labels so that the dataset can read the images while the model is built
    for idx, (h, w) in zip(ids, shapes):
        Image.fromarray(np.zeros((h, w), np.uint8), mode="L").save(os.path.join(voc, "SegmentationClassAug", f"{idx}.png"))
    model, info = build_model(model_dir, data_dir, ids, seed, rma)
    BaseDataset, _, _ = experiment_modules(rma)
    ds = voc_dataset(BaseDataset, data_dir, ids)
    classes = []
    with torch.no_grad():
        for i, (idx, (h, w)) in enumerate(zip(ids, shapes)):
            x = ds[i][0][None]
            lg = F.interpolate(model(pixel_values=x).logits, size=CROP, mode="bilinear", align_corners=False)
            am = lg[0].argmax(0).numpy()
            ph, pw = (CROP[0] - h) // 2, (CROP[1] - w) // 2
            am = am[ph:ph + h, pw:pw + w]
            classes.append(int(len(np.unique(am))))
            lab = make_label(rng, am, NUM_CLASSES)
            Image.fromarray(lab, mode="L").save(os.path.join(voc, "SegmentationClassAug", f"{idx}.png"))
    info["argmax_classes_per_image"] = classes
    return ids, shapes, info


# ------------------------------------------------------------------------------ runs
def run_ours(args, data, model, predict, out):
    t = time.perf_counter()
    subprocess.run([args.rust_bin, "exp", "--test-only", "--data_dir", data, "--data_yaml", "pascal_voc",
                    "--test_yaml", "test_iou", "--model_checkpoint", model, "--predict_yaml", predict,
                    "--output_dir", out, "--force"], check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - t
    run = json.load(open(os.path.join(out, "run.json")))["predictions"][predict]
    metrics = json.load(open(os.path.join(out, f"{predict}.metrics.json"))) \
        if os.path.exists(os.path.join(out, f"{predict}.metrics.json")) else None
    return {"wall": wall, **{k: float(v) for k, v in run["seconds"].items()}, "images": run["images"],
            "mIoUI": find_metric(out, predict, metrics, "mIoUI")}


def find_metric(out, predict, metrics, key):
    if metrics is None:
        for f in os.listdir(out):
            if f.startswith(predict) and f.endswith(".json") and f != "run.json":
                metrics = json.load(open(os.path.join(out, f)))
                break
    if isinstance(metrics, dict):
        if key in metrics:
            return metrics[key]
        for v in metrics.values():
            if isinstance(v, dict) and key in v:
                return v[key]
    return None


def run_python(args, data, model, predict, result):
    t = time.perf_counter()
    subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--rma-exp", args.rma_exp,
                    "--data", data, "--model", model, "--predict", predict, "--result", result],
                   check=True, capture_output=True)
    wall = time.perf_counter() - t
    r = json.load(open(result))
    r["wall"] = wall
    return r


def median(xs):
    import numpy as np
    return float(np.median(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rma-exp", default="/tmp/rma/exp")
    ap.add_argument("--rust-bin", default=os.path.join(ROOT, "target", "release", "rankseg"))
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "exp"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--predict", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.rma_exp = os.path.abspath(args.rma_exp)
    if args.worker:
        return python_worker(args)

    import numpy as np
    import torch
    import transformers
    from benchutil import available_cpus, cpu_model, write_text_atomic

    torch.set_num_threads(THREADS)
    raw = {p: {"python": [], "rankseg": []} for p in PREDICTORS}
    with tempfile.TemporaryDirectory(prefix="bench_exp_pipeline-") as tmp:
        data, model = os.path.join(tmp, "data"), os.path.join(tmp, "model")
        ids, shapes, minfo = build_data(data, model, args.images, args.seed, args.rma_exp)
        print(f"model: {minfo}", flush=True)
        for rep in range(args.repeats):
            for p in PREDICTORS:
                py = run_python(args, data, model, p, os.path.join(tmp, f"py_{p}_{rep}.json"))
                ours = run_ours(args, data, model, p, os.path.join(tmp, f"out_{p}"))
                raw[p]["python"].append(py)
                raw[p]["rankseg"].append(ours)
                print(f"rep {rep} {p}: python {py['wall']:.2f}s (fwd {py['forward']:.2f}) "
                      f"rankseg {ours['wall']:.2f}s (fwd {ours['forward']:.2f}) "
                      f"mIoUI {py['mIoUI']:.4f} / {ours['mIoUI']}", flush=True)

    stages = [("forward", "forward"), ("predict", "predict"), ("metrics", "metric"), ("total wall", "wall")]
    rows = []
    for p in PREDICTORS:
        for label, key in stages:
            py = median([r[key] for r in raw[p]["python"]])
            ours = median([r[key] for r in raw[p]["rankseg"]])
            rows.append({"predictor": p, "stage": label, "python_s": py, "rankseg_s": ours,
                         "ratio": py / ours if ours > 0 else None})
    miou = {}
    for p in PREDICTORS:
        a = raw[p]["python"][0]["mIoUI"]
        b = raw[p]["rankseg"][0]["mIoUI"]
        miou[p] = {"python": a, "rankseg": b, "abs_diff": None if b is None else abs(a - b),
                   "python_all_runs": sorted({r["mIoUI"] for r in raw[p]["python"]}),
                   "rankseg_all_runs": sorted({r["mIoUI"] for r in raw[p]["rankseg"] if r["mIoUI"] is not None})}
    meta = {"cpu": cpu_model(), "cpus": available_cpus(), "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": THREADS,
            "images": args.images, "image_shapes_hw": [list(s) for s in shapes], "repeats": args.repeats,
            "batch_size": BATCH_SIZE, "crop": CROP, "seed": args.seed, "model": minfo,
            "rust_bin": os.path.relpath(args.rust_bin, ROOT), "rankseg_rma_params": RMA_PARAMS}
    n_port = sum(1 for s in shapes if s[0] > s[1])
    lines = [
        "# Whole evaluation: the experiment's Python test loop vs `rankseg exp --test-only`\n",
        f"{meta['cpu']}, {meta['cpus']} CPUs; torch {meta['torch']} ({THREADS} threads), transformers "
        f"{meta['transformers']}. {args.images} JPEG images ({args.images - n_port} x 500x375, {n_port} x 375x500, "
        f"padded to 512x512), batch {BATCH_SIZE}; SegFormer-B0-sized model (MiT-b0, 21 classes, random weights): "
        f"{minfo['parameters'] / 1e6:.2f} M parameters, {minfo['safetensors_bytes'] / 2**20:.1f} MiB safetensors. "
        f"Medians of {args.repeats} interleaved runs; ratio = Python / rankseg.\n",
        "Python: the experiment's BaseDataset + Segmentor.predict + rankseg_rma.py in a fresh interpreter; "
        "metrics = scripts/reference_metrics.py compute_metrics. Total wall = the process (imports and model "
        "load included) for both sides. rankseg: forward / predict / metric seconds from run.json.\n",
        "| predictor | stage | Python s | rankseg s | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['predictor']} | {r['stage']} | {r['python_s']:.3f} | {r['rankseg_s']:.3f} | {ratio} |")
    lines += ["", "| predictor | mIoUI Python | mIoUI rankseg | abs diff |", "|---|---|---|---|"]
    for p, m in miou.items():
        b = "n/a" if m["rankseg"] is None else f"{m['rankseg']:.6f}"
        d = "n/a" if m["abs_diff"] is None else f"{m['abs_diff']:.2e}"
        lines.append(f"| {p} | {m['python']:.6f} | {b} | {d} |")
    py_extra = {p: {k: median([r[k] for r in raw[p]["python"]]) for k in ("import", "load_model", "loop_total")}
                for p in PREDICTORS}
    lines += ["", "Python process breakdown (medians, s): " + "; ".join(
        f"{p}: imports {v['import']:.2f}, model+dataset setup {v['load_model']:.2f}, loop+metrics {v['loop_total']:.2f}"
        for p, v in py_extra.items()) + "."]
    os.makedirs(args.out, exist_ok=True)
    write_text_atomic(os.path.join(args.out, "exp_pipeline.md"), "\n".join(lines) + "\n")
    write_text_atomic(os.path.join(args.out, "exp_pipeline.json"),
                      json.dumps({"meta": meta, "rows": rows, "mIoUI": miou, "python_breakdown": py_extra,
                                  "raw": raw}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
