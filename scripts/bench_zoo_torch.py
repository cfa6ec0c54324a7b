#!/usr/bin/env python3
"""Time the experiment's own PyTorch Segmentor forwards (DeepLabV3+ / UNet ResNet-50-D on LiTS,
SegFormer MiT-B0 / UPerNet ConvNeXt-base on ADE20K) on CPU, and the Rust (candle) binary on the
same seeded weights, comparing their logits.

    /tmp/venv/bin/python scripts/bench_zoo_torch.py [--out results/bench/zoo] [--repeats 5]
        [--threads N] [--models deeplabv3plus_resnet50d,...] [--rust-bin target/release/rankseg]
        [--rust-repeats N] [--keep DIR] [--rma-exp /tmp/rma/exp]

Models (configs/models/<model>.yaml with configs/datas/<data>.yaml; input shape):
  deeplabv3plus_resnet50d                     lits_fold0 (1 channel, 2 classes)   (1, 1, 384, 384)
  unet_resnet50d                              lits_fold0                          (1, 1, 384, 384)
  segformer_mit_b0                            ade20k (150 classes)                (1, 3, 512, 512)
  upernet_convnext_base.fb_in22k_ft_in1k_384  ade20k                              (1, 3, 512, 512)
The data yaml's crop_size / in_channels must match the input (the Segmentor's heads upsample
to the crop); if they do not, a copy with them set is written next to the checkpoint and used
by both sides.

The torch model is the experiment's `Segmentor(model_config, data_config, loss_config, None)`
imported from --rma-exp, built as scripts/make_zoo_fixtures.py does (nothing downloaded: timm
`pretrained=False`, the MiT `load_url` stand-in, an empty `mmcv` module), in `.eval()`, with
that script's seeded "formula weights" (a SplitMix64 stream per state-dict key seeded by
FNV-1a 64 of the key; BatchNorm running stats included), loaded strictly. The weights are
saved as a bare state dict (`torch.save(model.state_dict())`, `<model>/model.pth`) in a
temporary directory, or in --keep DIR (kept, with the inputs `input_<B>x<C>x<H>x<W>.npy`).
Input: seeded standard normal float32 (torch.Generator seed 41, one per shape).

Timing: torch.set_num_threads(--threads, default = CPUs available to this process),
torch.inference_mode(), one warm-up `model(x)[0]` (its logits are the reference), then the
median of --repeats timed forwards (time.perf_counter). `model(x)` also runs the auxiliary head
(every one of these yamls has `aux: True`), as the experiment's predict does; the Rust binary
computes the main logits only, so `head(method(*backbone(x)))` is timed too (torch_noaux_s,
same warm-up / repeats; in zoo.md and zoo.json, not in the ratio).

--rust-bin PATH (default target/release/rankseg; '' or 'none' = torch only) runs, per model,
with cwd = the repository root and RAYON_NUM_THREADS = --threads (unless already set),
    PATH logits --model_yaml M.yaml --data_yaml D.yaml --model_checkpoint DIR/<model>/model.pth
         --input DIR/input_<shape>.npy --out OUT.npy --repeats N --timing-json FILE
reads {"seconds": [...]} from FILE (or from the last JSON line of stdout carrying "seconds"),
and compares OUT.npy with the torch logits. A failing command is reported in the table and
the run goes on.

Outputs (written atomically) in --out: zoo.md, zoo.csv (model, input shape, torch_s,
candle_s, ratio = candle_s / torch_s, max_abs_diff, torch_max_abs_logit, status), and zoo.json
(all timings, commands, errors, versions, the machine: CPU, AVX-512 flags, torch's threads and
CPU capability). The first line of zoo.md and a leading '#' line of zoo.csv name the machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep scripts/ and the (read-only) experiment checkout clean

import numpy as np
import yaml

from benchutil import (MODEL_COLUMN, TIMING_COLUMNS, atomic_path, available_cpus, bench_parser, compare_rust,
                       cpu_model, fmt, model_names, run_rust_logits, save_npy_atomic, time_fn,
                       write_results, write_text_atomic)
import torch

import timm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from fixtureutil import DEFAULT_RMA  # noqa: E402
from make_zoo_fixtures import Exp, formula_state_dict, set_yaml_keys  # noqa: E402

MODELS = {
    "deeplabv3plus_resnet50d": dict(data="lits_fold0", shape=(1, 1, 384, 384)),
    "unet_resnet50d": dict(data="lits_fold0", shape=(1, 1, 384, 384)),
    "segformer_mit_b0": dict(data="ade20k", shape=(1, 3, 512, 512)),
    "upernet_convnext_base.fb_in22k_ft_in1k_384": dict(data="ade20k", shape=(1, 3, 512, 512)),
}
INPUT_SEED = 41
DEFAULT_RUST = os.path.join("target", "release", "rankseg")


def shape_str(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


# ---------------------------------------------------------------------------------------
# configs and the torch model
# ---------------------------------------------------------------------------------------

def model_yaml_path(name: str) -> str:
    return os.path.join(ROOT, "configs", "models", f"{name}.yaml")


def data_yaml_for(name: str, shape, work_dir: str):
    """(path, config, rewritten?) of the data yaml whose crop_size / in_channels fit `shape`."""
    src = os.path.join(ROOT, "configs", "datas", f"{MODELS[name]['data']}.yaml")
    text = open(src).read()
    cfg = yaml.safe_load(text)
    _, c, h, w = shape
    if list(cfg["crop_size"]) == [h, w] and int(cfg["in_channels"]) == c:
        return src, cfg, False
    text = set_yaml_keys(text, {"crop_size": f"[{h}, {w}]", "in_channels": str(c)})
    path = os.path.join(work_dir, f"{MODELS[name]['data']}_{h}x{w}.yaml")
    write_text_atomic(path, text)
    return path, yaml.safe_load(text), True


def build(exp: Exp, model_cfg: dict, data_cfg: dict):
    model = exp.build(model_cfg, data_cfg)
    model.load_state_dict(formula_state_dict(model), strict=True)
    return model.eval()


def main_only(model, x):
    """Segmentor.forward without the auxiliary branch (what the Rust binary computes)."""
    return model.head(model.method(*model.backbone(x)))


# ---------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------

def save_state_dict_atomic(model, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


# ---------------------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------------------

def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info(threads: int) -> dict:
    flags = cpu_flags()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        capability = None
    return {
        "cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "available_cpus": available_cpus(),
        "avx512f": "avx512f" in flags, "avx512_flags": sorted(f for f in flags if f.startswith("avx512")),
        "avx2": "avx2" in flags, "fma": "fma" in flags,
        "torch_threads": threads, "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": capability, "mkldnn": torch.backends.mkldnn.is_available(),
        "platform": platform.platform(), "machine": platform.machine(),
    }


def machine_line(info: dict) -> str:
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"{info['cpu_model']}, {info['logical_cpus']} logical CPUs ({info['available_cpus']} "
            f"available, {info['torch_threads']} torch threads), AVX-512 "
            f"{'yes' if info['avx512f'] else 'no'}, {now}, torch {torch.__version__}, "
            f"timm {timm.__version__}, Python {platform.python_version()}")


def rust_bin_info(rust_bin):
    info = {"path": rust_bin}
    try:
        st = os.stat(rust_bin)
        info["size"] = st.st_size
        info["mtime"] = dt.datetime.fromtimestamp(st.st_mtime).astimezone().isoformat(timespec="seconds")
        h = hashlib.sha256()
        with open(rust_bin, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        info["sha256"] = h.hexdigest()
        p = subprocess.run([rust_bin, "--version"], capture_output=True, text=True, timeout=60)
        info["version"] = p.stdout.strip() or p.stderr.strip()
    except Exception as e:
        info["error"] = str(e)
    return info


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------

COLUMNS = [MODEL_COLUMN, ("input_shape", "input", None, "input_shape", None), TIMING_COLUMNS[0],
           ("torch_noaux_s", "torch_noaux_s", ".4f", None, None),  # zoo.md only
           *TIMING_COLUMNS[1:]]


def write_report(out_dir, machine, meta, rows, details):
    intro = (f"The experiment's Segmentor with seeded formula weights (scripts/make_zoo_fixtures.py), "
             f"float32, batch 1, seeded standard normal input. torch_s = median of {meta['repeats']} "
             f"`model(x)[0]` forwards after one warm-up (torch.inference_mode, {meta['threads']} "
             f"threads; includes the auxiliary head, as the experiment's predict does); torch_noaux_s = "
             f"the same for `head(method(*backbone(x)))`; candle_s = median of the Rust binary's "
             f"reported seconds ({meta['rust_repeats'] or 'no'} repeats, main logits only); ratio = candle_s / "
             f"torch_s (> 1: Rust slower); max_abs_diff = max |Rust logits - torch logits|.")
    write_results(out_dir, "zoo", machine, intro, COLUMNS, rows, meta, details)


def bench_one(name, exp, args, ckpt_dir, inputs, rust_bin, rust_repeats, work, env):
    spec = MODELS[name]
    shape = spec["shape"]
    row = {"model": name, "input_shape": shape_str(shape), "torch_s": None, "torch_noaux_s": None,
           "candle_s": None, "ratio": None, "max_abs_diff": None, "torch_max_abs_logit": None,
           "status": "torch only"}
    det = {"model": name, "data": spec["data"], "input_shape": list(shape)}
    mdir = os.path.join(ckpt_dir, name)
    os.makedirs(mdir, exist_ok=True)
    model_yaml = model_yaml_path(name)
    data_yaml, data_cfg, rewritten = data_yaml_for(name, shape, mdir)
    model_cfg = yaml.safe_load(open(model_yaml))
    det.update(model_yaml=model_yaml, data_yaml=data_yaml, data_yaml_rewritten=rewritten,
               model_config=model_cfg, data_config=data_cfg)

    key = shape_str(shape)
    if key not in inputs:
        g = torch.Generator().manual_seed(INPUT_SEED)
        x = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
        path = os.path.join(ckpt_dir, f"input_{key}.npy")
        save_npy_atomic(path, x.numpy())
        inputs[key] = (x, path)
        print(f"   input -> {path}")
    x, input_path = inputs[key]
    det["input_path"] = input_path

    t0 = time.perf_counter()
    model = build(exp, model_cfg, data_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    det["build_s"] = time.perf_counter() - t0
    det["params"] = n_params
    print(f"   built in {det['build_s']:.1f} s, {n_params / 1e6:.2f} M parameters")
    checkpoint = os.path.join(mdir, "model.pth")
    save_state_dict_atomic(model, checkpoint)
    det["checkpoint"] = checkpoint
    det["checkpoint_bytes"] = os.path.getsize(checkpoint)
    print(f"   checkpoint -> {checkpoint} ({det['checkpoint_bytes'] / 2 ** 20:.1f} MiB)")

    ref, warm, secs = time_fn(lambda t: model(t)[0], x, args.repeats)
    ref = ref.numpy()
    row["torch_s"] = statistics.median(secs)
    row["torch_max_abs_logit"] = float(np.abs(ref).max())
    det.update(torch_warmup_s=warm, torch_seconds=secs, logits_shape=list(ref.shape))
    print(f"   torch: warm-up {warm:.3f} s, median {row['torch_s']:.4f} s of {args.repeats} "
          f"({', '.join(f'{s:.3f}' for s in secs)}); logits {tuple(ref.shape)}, "
          f"max |logit| {row['torch_max_abs_logit']:.3f}")
    expected = (shape[0], int(data_cfg["num_classes"]), shape[2], shape[3])
    status = []
    if tuple(ref.shape) != expected:
        status.append(f"torch logits {tuple(ref.shape)} != {expected}")
    if args.no_aux_timing:
        det["torch_noaux"] = None
    else:
        ref2, warm2, secs2 = time_fn(lambda t: main_only(model, t), x, args.repeats)
        row["torch_noaux_s"] = statistics.median(secs2)
        d2 = float(np.abs(ref2.numpy().astype(np.float64) - ref.astype(np.float64)).max())
        det["torch_noaux"] = {"warmup_s": warm2, "seconds": secs2, "max_abs_diff_vs_forward": d2}
        print(f"   torch no aux: warm-up {warm2:.3f} s, median {row['torch_noaux_s']:.4f} s "
              f"({', '.join(f'{s:.3f}' for s in secs2)}); max |diff| vs forward {d2:.3e}")
        del ref2
    del model

    if rust_bin:
        res, logits = run_rust_logits(
            rust_bin, ["--model_yaml", model_yaml, "--data_yaml", data_yaml, "--model_checkpoint", checkpoint],
            input_path, rust_repeats, work, name, args.rust_timeout, cwd=ROOT, env=env)
        det["rust"] = res
        if res.get("seconds") and row["torch_noaux_s"]:  # set first: zoo.json keeps this key order
            det["ratio_vs_noaux"] = statistics.median(res["seconds"]) / row["torch_noaux_s"]
        status += compare_rust(row, res, logits, ref, det)
        row["status"] = "; ".join(status) or "ok"
        print(f"   rust: candle_s {fmt(row['candle_s'], '.4f') or '-'}, ratio "
              f"{fmt(row['ratio'], '.3f') or '-'}, max_abs_diff "
              f"{fmt(row['max_abs_diff'], '.3e') or '-'}, argmax agreement "
              f"{fmt(det.get('argmax_agreement'), '.6f') or '-'}, status {row['status']}")
        del logits
    elif status:
        row["status"] = "; ".join(status)
    return row, det


def main():
    ap = bench_parser(__doc__, "zoo", "torch.set_num_threads, and RAYON_NUM_THREADS for the Rust binary "
                                      "unless set (default: CPUs available to this process)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--rust-bin", metavar="PATH", default=DEFAULT_RUST,
                    help="Rust binary run as 'PATH logits --model_yaml ... --timing-json ...' "
                         f"(default {DEFAULT_RUST}, relative to the repository root if not found "
                         "here; '' or 'none': torch only)")
    ap.add_argument("--rust-timeout", type=float, default=1800.0, help="seconds per Rust run")
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="write (and keep) DIR/<model>/model.pth and DIR/input_<shape>.npy "
                         "(default: a temporary directory, removed)")
    ap.add_argument("--no-aux-timing", action="store_true",
                    help="skip timing torch's forward without the auxiliary head")
    ap.add_argument("--rma-exp", default=DEFAULT_RMA, help="RankSEG-RMA exp/ checkout (read only)")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    rust_repeats = args.rust_repeats if args.rust_repeats is not None else args.repeats
    if rust_repeats < 1:
        raise SystemExit("--rust-repeats must be >= 1")
    names = model_names(args.models, MODELS)

    rust_bin = None
    if args.rust_bin and args.rust_bin.lower() != "none":
        rust_bin = args.rust_bin
        if os.sep in rust_bin:
            rust_bin = os.path.abspath(rust_bin)
            alt = os.path.join(ROOT, args.rust_bin)
            if not os.path.exists(rust_bin) and not os.path.isabs(args.rust_bin) and os.path.exists(alt):
                rust_bin = alt

    torch.set_num_threads(args.threads)
    minfo = machine_info(torch.get_num_threads())
    machine = machine_line(minfo)
    print(f"machine: {machine}")
    env = dict(os.environ)
    env.setdefault("RAYON_NUM_THREADS", str(torch.get_num_threads()))
    rinfo = None
    if rust_bin:
        rinfo = rust_bin_info(rust_bin)
        rinfo["RAYON_NUM_THREADS"] = env["RAYON_NUM_THREADS"]
        print(f"rust: {rust_bin} ({rinfo.get('version') or rinfo.get('error')}, "
              f"RAYON_NUM_THREADS={env['RAYON_NUM_THREADS']})")

    exp = Exp(os.path.abspath(args.rma_exp))
    tmp_ckpt = None
    ckpt_dir = args.keep
    if ckpt_dir is None:
        tmp_ckpt = tempfile.mkdtemp(prefix="bench_zoo_ckpt-")
        ckpt_dir = tmp_ckpt
    ckpt_dir = os.path.abspath(ckpt_dir)
    os.makedirs(ckpt_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench_zoo_rust-") if rust_bin else None

    rows, details, inputs = [], [], {}
    try:
        for name in names:
            print(f"== {name}", flush=True)
            try:
                row, det = bench_one(name, exp, args, ckpt_dir, inputs, rust_bin, rust_repeats, work, env)
            except Exception as e:  # a torch-side failure: report it and go on
                msg = f"{type(e).__name__}: {e}"
                print(f"   FAILED: {msg}")
                row = {"model": name, "input_shape": shape_str(MODELS[name]["shape"]), "torch_s": None,
                       "torch_noaux_s": None, "candle_s": None, "ratio": None, "max_abs_diff": None,
                       "torch_max_abs_logit": None,
                       "status": "FAILED (torch): " + msg.replace("|", "/").replace("\n", " ")[:300]}
                det = {"model": name, "error": msg}
            rows.append(row)
            details.append(det)
            if tmp_ckpt:  # checkpoints of ConvNeXt-base are ~0.5 GB: do not pile them up
                shutil.rmtree(os.path.join(ckpt_dir, name), ignore_errors=True)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
        if tmp_ckpt:
            shutil.rmtree(tmp_ckpt, ignore_errors=True)

    versions = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                "numpy": np.__version__, "yaml": yaml.__version__}
    try:
        import cv2
        versions["cv2"] = cv2.__version__
    except Exception:
        pass
    meta = {"machine": machine, "machine_info": minfo, "versions": versions, "repeats": args.repeats,
            "rust_repeats": rust_repeats if rust_bin else None, "threads": torch.get_num_threads(),
            "input_seed": INPUT_SEED, "weights": "make_zoo_fixtures.formula_state_dict (gain 1.0)",
            "rma_exp": os.path.abspath(args.rma_exp), "checkpoints": args.keep,
            "rust_bin": rust_bin, "rust": rinfo, "argv": sys.argv}
    write_report(args.out, machine, meta, rows, details)


if __name__ == "__main__":
    main()
