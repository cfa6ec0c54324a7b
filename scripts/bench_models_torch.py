#!/usr/bin/env python3
"""Time PyTorch (transformers) SegFormer-B0 and UperNet-ConvNeXt-tiny forwards on CPU, and
optionally the Rust (candle) binary on the same random weights.

    /tmp/venv/bin/python scripts/bench_models_torch.py [--out results/bench/models]
        [--repeats 5] [--threads N] [--size 512] [--models segformer_b0_150,...]
        [--save-checkpoints DIR] [--rust-bin target/release/rankseg] [--rust-repeats N]

Models (random seeded weights, nothing downloaded; same initialisation as
scripts/make_model_fixtures.py's randomize_):
  segformer_b0_150           SegformerConfig() defaults = nvidia/mit-b0 (hidden [32,64,160,256],
                             depths [2,2,2,2], heads [1,2,5,8], sr [8,4,2,1], decoder 256),
                             num_labels 150; logits (1, 150, S/4, S/4)
  upernet_convnext_tiny_150  ConvNeXt-tiny backbone (hidden [96,192,384,768], depths
                             [3,3,9,3]), UperNet hidden 512, pool scales [1,2,3,6], auxiliary
                             head on (in 384, channels 256, 1 conv), num_labels 150;
                             logits (1, 150, S, S)
Input (1, 3, S, S), S = --size (default 512), seeded standard normal, float32.

Timing: torch.set_num_threads(--threads, default = CPUs available to this process),
torch.inference_mode(), one warm-up forward (its logits are the reference), then the
median of --repeats timed forwards (time.perf_counter).

--save-checkpoints DIR writes DIR/segformer_b0_150/, DIR/upernet_convnext_tiny_150/
(config.json + model.safetensors, save_pretrained) and DIR/input_<S>.npy.

--rust-bin PATH runs, per model,
    PATH logits --model DIR/<model> --input DIR/input_<S>.npy --out OUT.npy
         --repeats N --timing-json FILE
(DIR = --save-checkpoints, or a temporary directory), reads {"seconds": [...]} from FILE
(or from the last JSON line of stdout carrying "seconds"), and compares OUT.npy with the
torch logits. A failing command is reported in the table and the run goes on.

Outputs (written atomically) in --out: models.md, models.csv (model, torch_s, candle_s,
ratio = candle_s / torch_s, max_abs_diff, plus torch_max_abs_logit and status), and
models.json (all timings, commands, errors). The first line of models.md and a leading
'#' line of models.csv name the machine (CPU model, cores, threads, date, versions).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__

import numpy as np

from benchutil import (MODEL_COLUMN, TIMING_COLUMNS, available_cpus, bench_parser, compare_rust, cpu_model,
                       fmt, model_names, replace_dir, run_rust_logits, save_npy_atomic, time_fn,
                       write_results)
import torch

import transformers
from transformers import (
    SegformerConfig,
    SegformerForSemanticSegmentation,
    UperNetForSemanticSegmentation,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_model_fixtures import randomize_, upernet_convnext_config  # noqa: E402

MODELS = {
    "segformer_b0_150": dict(seed=21),
    "upernet_convnext_tiny_150": dict(seed=22),
}
INPUT_SEED = 23


def build(name: str):
    if name == "segformer_b0_150":
        cfg = SegformerConfig(
            num_channels=3, num_encoder_blocks=4, depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1],
            hidden_sizes=[32, 64, 160, 256], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
            num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4], decoder_hidden_size=256,
            num_labels=150,
        )
        model = SegformerForSemanticSegmentation(cfg)
    elif name == "upernet_convnext_tiny_150":
        cfg = upernet_convnext_config(
            dict(num_channels=3, patch_size=4, hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3],
                 layer_scale_init_value=1e-6, drop_path_rate=0.0,
                 out_features=["stage1", "stage2", "stage3", "stage4"]),
            hidden_size=512, pool_scales=[1, 2, 3, 6], use_auxiliary_head=True,
            auxiliary_in_channels=384, auxiliary_channels=256, auxiliary_num_convs=1,
            auxiliary_concat_input=False, num_labels=150,
        )
        model = UperNetForSemanticSegmentation(cfg)
    else:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    randomize_(model, MODELS[name]["seed"])
    return model.eval()


# ---------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------

def save_checkpoint_atomic(model, final_dir: str) -> None:
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final_dir)}.tmp-")
    try:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="100GB")
        os.chmod(tmp, 0o755)
        replace_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------------------

def machine_line(threads: int) -> str:
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs ({available_cpus()} available, "
            f"{threads} torch threads), {now}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, Python {platform.python_version()}")


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------

def write_report(out_dir, machine, meta, rows, details):
    intro = (f"Input (1, 3, {meta['size']}, {meta['size']}) float32; median of {meta['repeats']} torch "
             f"forwards after one warm-up (torch.inference_mode); candle_s = median of the Rust "
             f"binary's reported seconds ({meta['rust_repeats']} repeats); ratio = candle_s / torch_s "
             f"(> 1: Rust slower); max_abs_diff = max |Rust logits - torch logits|.")
    write_results(out_dir, "models", machine, intro, [MODEL_COLUMN] + TIMING_COLUMNS, rows, meta, details)


def main():
    ap = bench_parser(__doc__, "models", "torch.set_num_threads (default: CPUs available to this process)")
    ap.add_argument("--size", type=int, default=512, help="input height = width (default 512)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--save-checkpoints", metavar="DIR", default=None,
                    help="write DIR/<model>/{config.json,model.safetensors} and DIR/input_<size>.npy")
    ap.add_argument("--rust-bin", metavar="PATH", default=None,
                    help="Rust binary to run as 'PATH logits --model ... --timing-json ...'")
    ap.add_argument("--rust-timeout", type=float, default=1800.0, help="seconds per Rust run")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    rust_repeats = args.rust_repeats if args.rust_repeats is not None else args.repeats
    names = model_names(args.models, MODELS)

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    machine = machine_line(torch.get_num_threads())
    print(f"machine: {machine}")

    g = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn((1, 3, args.size, args.size), generator=g, dtype=torch.float32)

    tmp_ckpt = None
    ckpt_dir = args.save_checkpoints
    if ckpt_dir is None and args.rust_bin:
        tmp_ckpt = tempfile.mkdtemp(prefix="bench_models_ckpt-")
        ckpt_dir = tmp_ckpt
    input_path = None
    if ckpt_dir:
        os.makedirs(ckpt_dir, exist_ok=True)
        input_path = os.path.join(ckpt_dir, f"input_{args.size}.npy")
        save_npy_atomic(input_path, x.numpy())
        print(f"input -> {input_path}")
    rust_bin = os.path.abspath(args.rust_bin) if args.rust_bin and os.sep in args.rust_bin else args.rust_bin
    work = tempfile.mkdtemp(prefix="bench_models_rust-") if args.rust_bin else None

    rows, details = [], []
    try:
        for name in names:
            print(f"== {name}")
            t0 = time.perf_counter()
            model = build(name)
            n_params = sum(p.numel() for p in model.parameters())
            print(f"   built in {time.perf_counter() - t0:.1f} s, {n_params / 1e6:.2f} M parameters")
            model_dir = None
            if ckpt_dir:
                model_dir = os.path.join(ckpt_dir, name)
                save_checkpoint_atomic(model, model_dir)
                print(f"   checkpoint -> {model_dir}")
            ref, warm, secs = time_fn(lambda t: model(pixel_values=t).logits, x, args.repeats)
            ref = ref.numpy()
            torch_s = statistics.median(secs)
            print(f"   torch: warm-up {warm:.3f} s, median {torch_s:.4f} s of {args.repeats} "
                  f"({', '.join(f'{s:.3f}' for s in secs)}); logits {tuple(ref.shape)}, "
                  f"max |logit| {np.abs(ref).max():.3f}")
            del model
            row = {"model": name, "torch_s": torch_s, "candle_s": None, "ratio": None,
                   "max_abs_diff": None, "torch_max_abs_logit": float(np.abs(ref).max()),
                   "status": "torch only"}
            det = {"model": name, "params": n_params, "torch_warmup_s": warm, "torch_seconds": secs,
                   "logits_shape": list(ref.shape)}
            if args.rust_bin:
                res, logits = run_rust_logits(rust_bin, ["--model", model_dir], input_path, rust_repeats,
                                              work, name, args.rust_timeout)
                det["rust"] = res
                status = compare_rust(row, res, logits, ref)
                row["status"] = "; ".join(status) or "ok"
                print(f"   rust: candle_s {fmt(row['candle_s'], '.4f') or '-'}, ratio "
                      f"{fmt(row['ratio'], '.3f') or '-'}, max_abs_diff "
                      f"{fmt(row['max_abs_diff'], '.3e') or '-'}, status {row['status']}")
                del logits
            del ref
            rows.append(row)
            details.append(det)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
        if tmp_ckpt:
            shutil.rmtree(tmp_ckpt, ignore_errors=True)

    meta = {"machine": machine, "size": args.size, "repeats": args.repeats,
            "rust_repeats": rust_repeats if args.rust_bin else None,
            "threads": torch.get_num_threads(), "input_seed": INPUT_SEED,
            "checkpoints": args.save_checkpoints, "rust_bin": args.rust_bin}
    write_report(args.out, machine, meta, rows, details)


if __name__ == "__main__":
    main()
