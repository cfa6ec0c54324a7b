"""Torch references for the optimizers and schedule (src/train/optim, src/train/schedule.rs):
torch.optim.AdamW and torch.optim.SGD (momentum) over the experiment's parameter groups
(Segmentor.group_weight: per module a decayed group of the >1-D parameters and an undecayed
group of the 1-D ones, the second module at multiplier x lr) under main.py's LambdaLR
(warmup from start_lr, then poly), stepped as train.py steps them.

Seeded, CPU, one thread, torch's default (single-tensor) update path. For each optimizer one
file tests/fixtures/optim/<name>.safetensors: `init.<param>`, `grad<k>.<param>` (absent where
the parameter has no grad that step: torch skips it), `step<k>.<param>` after step k,
`lr` (K, groups) float64 the rates each step used, and the final optimizer state
`state.<param>.<key>`. The yaml values are the experiment's adamw_lr6e-4 and sgd_lr1e-2.
Usage: /tmp/venv/bin/python scripts/make_optim_fixtures.py [--out DIR]
"""

import argparse
import os

import torch
from safetensors.torch import save_file

STEPS = 12
TRAIN_ITERS = STEPS - 1  # train.py breaks after the step that passes train_iters
WARMUP_RATIO = 0.25
SKIP = {("head.b", 4)}  # (param, step) without a grad
SHAPES = {"bb.w": (5, 37), "bb.b": (37,), "head.w": (3, 2, 2, 7), "head.b": (3,)}
CONFIGS = {
    "adamw": dict(optimizer="adamw", lr=0.0006, start_lr=0.000001, multiplier=10.0, power=1, weight_decay=0.01),
    "sgd": dict(optimizer="sgd", lr=0.01, start_lr=0.000001, multiplier=10.0, power=0.9, weight_decay=0.0005,
                momentum=0.9),
}


def run(name, cfg, out_dir):
    gen = torch.Generator().manual_seed(1)
    params = {k: torch.randn(s, generator=gen).requires_grad_(True) for k, s in SHAPES.items()}
    lr, mult = cfg["lr"], cfg["multiplier"]
    groups = [dict(params=[params["bb.w"]], lr=lr), dict(params=[params["bb.b"]], weight_decay=0.0, lr=lr),
              dict(params=[params["head.w"]], lr=mult * lr),
              dict(params=[params["head.b"]], weight_decay=0.0, lr=mult * lr)]
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, weight_decay=cfg["weight_decay"], momentum=cfg["momentum"])
    else:
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg["weight_decay"])
    warmup_iters = WARMUP_RATIO * TRAIN_ITERS
    lr_lambda = lambda iteration: max(cfg["start_lr"] / cfg["lr"], iteration / warmup_iters) \
        if iteration < warmup_iters else (1. - (iteration - warmup_iters) / (TRAIN_ITERS - warmup_iters)) ** cfg["power"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lr_lambda)

    out = {f"init.{k}": v.detach().clone() for k, v in params.items()}
    lrs = []
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        for k, p in params.items():
            if (k, step) in SKIP:
                continue
            # Gradients over several magnitudes, so eps and weight decay both matter somewhere.
            scale = 10.0 ** torch.randint(-4, 1, p.shape, generator=gen).float()
            p.grad = torch.randn(p.shape, generator=gen) * scale
            out[f"grad{step}.{k}"] = p.grad.clone()
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
        for k, p in params.items():
            out[f"step{step}.{k}"] = p.detach().clone()
    out["lr"] = torch.tensor(lrs, dtype=torch.float64)
    for k, p in params.items():
        for key, v in opt.state[p].items():
            if isinstance(v, torch.Tensor):
                out[f"state.{k}.{key}"] = v.clone()
    path = os.path.join(out_dir, f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    os.chmod(path, 0o644)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "optim"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    for name, cfg in CONFIGS.items():
        run(name, cfg, args.out)


if __name__ == "__main__":
    main()
