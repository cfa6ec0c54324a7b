#!/usr/bin/env python3
"""Time one training iteration of the experiment's own PyTorch Segmentor on CPU against our
binary's `rankseg train-bench`, in the same run, for DeepLabV3+ ResNet-18-D and SegFormer
MiT-B0 (batch 4, 256x256 crops, 21 classes).

Why: the issue's target for training is "no slower than 1.5x PyTorch per iteration"; running
both sides from one script, alternating them model by model, measures the ratio on one machine
state (same load, same clocks, same thread count).

    /tmp/venv/bin/python scripts/bench_train_torch.py [--rankseg target/release/rankseg]
        [--skip-rankseg] [--models deeplabv3plus_resnet18d,segformer_mit_b0] [--iters 5]
        [--warmup 2] [--threads N] [--out results/bench/train] [--rma-exp /tmp/rma/exp]

Torch side, built as the experiment's main.py builds it, from its own configs (--rma-exp
configs/): models/<model>.yaml, datas/pascal_voc.yaml with crop_size set to [256, 256],
losses/ce.yaml, optims/adamw_lr6e-4.yaml; criterion = get_criterion(args) (FocalLoss,
gamma 0 = cross-entropy, ignoring label num_classes), `Segmentor(model_config, data_config,
loss_config, criterion)`, `optim.AdamW(model.get_params_list(lr, multiplier), lr,
weight_decay)`, `LambdaLR` with main.py's lr_lambda (train_iters --train-iters, warmup_ratio
--warmup-ratio), `model.train()`. Nothing is downloaded (scripts/make_zoo_fixtures.py's Exp:
timm.create_model gets pretrained=False, the MiT `model_zoo.load_url` returns the just built
encoder's random state dict); the weights are the modules' own initialisation after
torch.manual_seed(0). Input (torch.Generator seed 41): images standard normal
(4, 3, 256, 256) float32, labels randint 0..20 with ~5% set to 255, then 255 -> 21 as the
experiment's BaseDataset does before the criterion sees them; the same batch every iteration.
One iteration = optimizer.zero_grad(); loss = model.forward_loss(image, label);
loss.backward(); optimizer.step(); scheduler.step() (train.py's loop body), timed with
time.perf_counter after --warmup untimed iterations; torch.set_num_threads(--threads).

Ours, right after the torch side of each model (cwd = the repository root, RAYON_NUM_THREADS =
--threads unless already set):
    RANKSEG train-bench --model_yaml MODEL --batch_size 4 --crop 256 --num_classes 21
        --iters ITERS --warmup WARMUP --json OUT.json
which writes {"model": ..., "seconds": [per-iteration samples], "median": ...}.

Writes (atomically) --out/bench_train.md (model, torch s/iter, rankseg s/iter, ratio =
rankseg / torch, whether the 1.5x target is met), bench_train.csv (the same columns) and
bench_train.json (meta: machine, CPU model, threads, torch version, date, settings; rows; per
model details: all samples, losses, the command and its output). If the binary is missing or
fails, torch's numbers are still written, the rankseg columns say so, and the exit status is 1.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep scripts/ and the (read-only) experiment checkout clean

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
import types

import torch
import yaml
from torch import optim

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from benchutil import MODEL_COLUMN, cpu_model, fmt, model_names, write_results  # noqa: E402
from fixtureutil import DEFAULT_RMA  # noqa: E402
from make_zoo_fixtures import Exp  # noqa: E402

MODELS = ["deeplabv3plus_resnet18d", "segformer_mit_b0"]
DATA_YAML, LOSS_YAML, OPTIM_YAML = "pascal_voc", "ce", "adamw_lr6e-4"
BATCH, CROP, NUM_CLASSES, IGNORE_FRACTION = 4, 256, 21, 0.05
INPUT_SEED = 41
TARGET_RATIO = 1.5
DEFAULT_RANKSEG = os.path.join(ROOT, "target", "release", "rankseg")
STEM = "bench_train"


# ---------------------------------------------------------------------------------------
# torch side
# ---------------------------------------------------------------------------------------

def load_yaml(rma, kind, name):
    with open(os.path.join(rma, "configs", kind, f"{name}.yaml")) as f:
        return yaml.load(f, Loader=yaml.Loader)


def build_training(exp, rma, name, train_iters, warmup_ratio):
    """(model in train mode, optimizer, scheduler, configs) as main.py builds them."""
    args = types.SimpleNamespace(model_config=load_yaml(rma, "models", name),
                                 data_config=load_yaml(rma, "datas", DATA_YAML),
                                 loss_config=load_yaml(rma, "losses", LOSS_YAML),
                                 optim_config=load_yaml(rma, "optims", OPTIM_YAML))
    args.data_config["crop_size"] = [CROP, CROP]
    assert args.data_config["num_classes"] == NUM_CLASSES and args.data_config["in_channels"] == 3
    oc = args.optim_config
    assert oc["optimizer"] == "adamw", oc
    from losses.get_criterion import get_criterion  # the experiment's (exp is on sys.path)

    torch.manual_seed(0)
    criterion = get_criterion(args)
    model = exp.segmentor.Segmentor(args.model_config, args.data_config, args.loss_config, criterion)
    params_list = model.get_params_list(oc["lr"], oc["multiplier"])
    optimizer = optim.AdamW(params_list, lr=oc["lr"], weight_decay=oc["weight_decay"])
    warmup_iters = warmup_ratio * train_iters
    lr_lambda = lambda iteration: max(oc["start_lr"] / oc["lr"], iteration / warmup_iters) \
        if iteration < warmup_iters else (1. - (iteration - warmup_iters) / (train_iters - warmup_iters)) ** oc["power"]
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lr_lambda)
    model.train()
    return model, optimizer, scheduler, vars(args)


def make_batch():
    g = torch.Generator().manual_seed(INPUT_SEED)
    image = torch.randn((BATCH, 3, CROP, CROP), generator=g, dtype=torch.float32)
    label = torch.randint(0, NUM_CLASSES, (BATCH, CROP, CROP), generator=g, dtype=torch.int64)
    label[torch.rand((BATCH, CROP, CROP), generator=g) < IGNORE_FRACTION] = 255
    label[label == 255] = NUM_CLASSES  # BaseDataset: ignore_index (255) -> num_classes
    return image, label


def time_torch(exp, rma, name, image, label, args):
    t0 = time.perf_counter()
    model, optimizer, scheduler, configs = build_training(exp, rma, name, args.train_iters, args.warmup_ratio)
    det = {"build_s": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters()),
           "configs": configs}

    def step():
        optimizer.zero_grad()
        loss = model.forward_loss(image, label)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss

    losses, secs = [], []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        loss = step()
        s = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= args.warmup:
            secs.append(s)
    det.update(seconds=secs, median=statistics.median(secs), losses=losses,
               lr_after=[g["lr"] for g in optimizer.param_groups[::2]])
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite torch loss: {losses}")
    return det


# ---------------------------------------------------------------------------------------
# our binary
# ---------------------------------------------------------------------------------------

def run_rankseg(rankseg, name, args, work, env):
    """Run `rankseg train-bench` for `name`; a record with seconds / median, or error."""
    out_json = os.path.join(work, f"{name}.json")
    cmd = [rankseg, "train-bench", "--model_yaml", name, "--batch_size", str(BATCH), "--crop", str(CROP),
           "--num_classes", str(NUM_CLASSES), "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--json", out_json]
    res = {"command": cmd, "cwd": ROOT, "RAYON_NUM_THREADS": env["RAYON_NUM_THREADS"]}
    try:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.rankseg_timeout, cwd=ROOT, env=env)
        res["wall_s"] = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        res["error"] = f"timed out after {args.rankseg_timeout:g} s"
        return res
    except OSError as e:
        res["error"] = f"could not run {rankseg}: {e}"
        return res
    res.update(returncode=p.returncode, stdout_tail=p.stdout[-2000:], stderr_tail=p.stderr[-2000:])
    if p.returncode != 0:
        res["error"] = f"exit status {p.returncode}: {(p.stderr.strip() or p.stdout.strip())[-500:]}"
        return res
    try:
        with open(out_json) as f:
            data = json.load(f)
        secs = [float(s) for s in data["seconds"]]
        if not secs:
            raise ValueError("no samples")
    except Exception as e:
        res["error"] = f"reading {out_json}: {type(e).__name__}: {e}"
        return res
    res.update(reported=data, seconds=secs, median=statistics.median(secs))
    if data.get("model") != name:
        res["note"] = f"reported model {data.get('model')!r}"
    return res


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------

COLUMNS = [MODEL_COLUMN,
           ("torch_s", "torch s/iter", ".4f", "torch_s", ".6f"),
           ("rankseg_s", "rankseg s/iter", ".4f", "rankseg_s", ".6f"),
           ("ratio", "ratio", ".3f", "ratio", ".4f"),
           ("target_met", f"<= {TARGET_RATIO}x", None, "target_met", None),
           ("status", "status", None, "status", None)]


def intro(meta, rows):
    text = (f"One training iteration (zero_grad, forward_loss, backward, AdamW step, LambdaLR step) at "
            f"batch {BATCH}, {CROP}x{CROP} crops, {NUM_CLASSES} classes, loss `{LOSS_YAML}`, optim "
            f"`{OPTIM_YAML}`, train mode, CPU, {meta['threads']} threads. torch s/iter = median of "
            f"{meta['iters']} timed iterations of the experiment's own Segmentor (after {meta['warmup']} "
            f"warm-up); rankseg s/iter = the same for `rankseg train-bench`, run right after each torch "
            f"model; ratio = rankseg / torch. Target (the issue): ratio <= {TARGET_RATIO}.")
    missing = [r["model"] for r in rows if r["rankseg_s"] is None]
    if meta["rankseg"] is None:
        text += "\n\n**rankseg timings not measured (--skip-rankseg).**"
    elif missing:
        text += f"\n\n**rankseg timings MISSING for {', '.join(missing)}** (see status)."
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per side and model")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations before them")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads, and RAYON_NUM_THREADS for ours unless set (default: os.cpu_count())")
    ap.add_argument("--train-iters", type=int, default=1000, help="train_iters of main.py's lr_lambda")
    ap.add_argument("--warmup-ratio", type=float, default=0.01, help="warmup_ratio of main.py's lr_lambda")
    ap.add_argument("--rankseg", default=DEFAULT_RANKSEG, help="our binary (default: target/release/rankseg)")
    ap.add_argument("--skip-rankseg", action="store_true", help="time torch only")
    ap.add_argument("--rankseg-timeout", type=float, default=1800.0, help="seconds per rankseg run")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "train"),
                    help=f"directory for {STEM}.md / .csv / .json")
    ap.add_argument("--rma-exp", default=DEFAULT_RMA, help="RankSEG-RMA exp/ checkout (read only)")
    args = ap.parse_args()
    if args.iters < 1 or args.warmup < 0 or args.threads < 1:
        raise SystemExit("need --iters >= 1, --warmup >= 0, --threads >= 1")
    names = model_names(args.models, MODELS)
    rma = os.path.abspath(args.rma_exp)
    rankseg = None if args.skip_rankseg else os.path.abspath(args.rankseg)

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    env = dict(os.environ)
    env.setdefault("RAYON_NUM_THREADS", str(threads))
    machine = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, {threads} threads, "
               f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, torch {torch.__version__}")
    print(f"machine: {machine}\nrankseg: {rankseg or 'skipped'}", flush=True)

    exp = Exp(rma)
    image, label = make_batch()
    rows, details = [], []
    with tempfile.TemporaryDirectory(prefix="bench_train-") as work:
        for name in names:
            print(f"== {name}", flush=True)
            row = {"model": name, "torch_s": None, "rankseg_s": None, "ratio": None, "target_met": "",
                   "status": ""}
            det = {"model": name, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
            status = []
            try:
                det["torch"] = time_torch(exp, rma, name, image, label, args)
                row["torch_s"] = det["torch"]["median"]
                print(f"   torch: median {row['torch_s']:.4f} s/iter ("
                      f"{', '.join(f'{s:.3f}' for s in det['torch']['seconds'])}), "
                      f"{det['torch']['params'] / 1e6:.2f} M parameters, losses "
                      f"{', '.join(f'{v:.4f}' for v in det['torch']['losses'])}", flush=True)
            except Exception as e:  # a torch-side failure: report it and go on
                det["torch"] = {"error": f"{type(e).__name__}: {e}"}
                status.append(f"torch FAILED: {det['torch']['error']}")
                print(f"   torch FAILED: {det['torch']['error']}", flush=True)
            gc.collect()  # the torch model is gone before ours runs
            if rankseg:
                res = det["rankseg"] = run_rankseg(rankseg, name, args, work, env)
                if "error" in res:
                    status.append(f"rankseg MISSING: {res['error']}")
                    print(f"   rankseg MISSING: {res['error']}", flush=True)
                else:
                    row["rankseg_s"] = res["median"]
                    print(f"   rankseg: median {res['median']:.4f} s/iter ("
                          f"{', '.join(f'{s:.3f}' for s in res['seconds'])})"
                          + (f"; {res['note']}" if "note" in res else ""), flush=True)
                    if row["torch_s"]:
                        row["ratio"] = det["ratio"] = row["rankseg_s"] / row["torch_s"]
                        row["target_met"] = "yes" if row["ratio"] <= TARGET_RATIO else "no"
                        print(f"   ratio rankseg/torch {row['ratio']:.3f} (target <= {TARGET_RATIO}: "
                              f"{row['target_met']})", flush=True)
            else:
                status.append("rankseg skipped")
            row["status"] = "; ".join(s.replace("|", "/").replace("\n", " ")[:300] for s in status) or "ok"
            rows.append(row)
            details.append(det)

    meta = {"machine": machine, "cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
            "RAYON_NUM_THREADS": env["RAYON_NUM_THREADS"] if rankseg else None,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "batch_size": BATCH, "crop": [CROP, CROP], "num_classes": NUM_CLASSES, "data_yaml": DATA_YAML,
            "loss_yaml": LOSS_YAML, "optim_yaml": OPTIM_YAML, "train_iters": args.train_iters,
            "warmup_ratio": args.warmup_ratio, "iters": args.iters, "warmup": args.warmup,
            "input_seed": INPUT_SEED, "ignore_fraction": IGNORE_FRACTION, "target_ratio": TARGET_RATIO,
            "rma_exp": rma, "rankseg": rankseg, "argv": sys.argv}
    write_results(args.out, STEM, machine, intro(meta, rows), COLUMNS, rows, meta, details)
    for r in rows:
        ours = fmt(r["rankseg_s"], ".4f") + " s/iter" if r["rankseg_s"] is not None else \
            ("skipped" if rankseg is None else "MISSING")
        print(f"{r['model']}: torch {fmt(r['torch_s'], '.4f') or '-'} s/iter, rankseg {ours}, "
              f"ratio {fmt(r['ratio'], '.3f') or '-'}")
    failed = any(r["torch_s"] is None for r in rows) or (rankseg and any(r["rankseg_s"] is None for r in rows))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
