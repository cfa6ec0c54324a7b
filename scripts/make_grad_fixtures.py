"""Torch references for the training ops' backward passes (src/train/): bilinear upsampling,
max and average pooling with padding / stride != kernel / ceil_mode (timm's AvgPool2dSame
too), layer norm, RMS norm, softmax, and BatchNorm2d in train mode (two steps: output, grads
of input, weight and bias, and the running statistics after each step).

Seeded, CPU, one thread: rerunning writes identical files. One safetensors file per case in
tests/fixtures/grad/ with `x` (input), `grad_out` (upstream gradient), `out` (torch's
forward) and `grad_x` (torch's input gradient), plus the case's parameters and their grads.
Usage: /tmp/venv/bin/python scripts/make_grad_fixtures.py [--out DIR]
"""

import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers import AvgPool2dSame


def case(out_dir, name, x, fn, extra=None):
    """Runs fn on a leaf copy of x, backpropagates a seeded upstream gradient, saves all."""
    x = x.clone().requires_grad_(True)
    params = {k: v.clone().requires_grad_(True) for k, v in (extra or {}).items()}
    y = fn(x, **params)
    g = torch.randn_like(y)
    y.backward(g)
    tensors = {"x": x.detach(), "grad_out": g, "out": y.detach(), "grad_x": x.grad}
    for k, v in params.items():
        tensors[k] = v.detach()
        tensors[f"grad_{k}"] = v.grad
    save(tensors, os.path.join(out_dir, f"{name}.safetensors"))


def save(tensors, path):
    """safetensors writes 0600 files; fixtures are 0644 like the rest of the tree."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    os.chmod(path, 0o644)


def batch_norm_case(out_dir):
    """nn.BatchNorm2d(4).train(), random affine and running statistics, two forwards."""
    bn = nn.BatchNorm2d(4).train()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(4))
        bn.bias.copy_(torch.randn(4))
        bn.running_mean.copy_(torch.randn(4))
        bn.running_var.copy_(torch.rand(4) + 0.5)
    tensors = {
        "weight": bn.weight.detach().clone(),
        "bias": bn.bias.detach().clone(),
        "running_mean0": bn.running_mean.clone(),
        "running_var0": bn.running_var.clone(),
    }
    for step in (1, 2):
        x = (torch.randn(3, 4, 5, 6) * 2 + 0.5).requires_grad_(True)
        bn.zero_grad()
        y = bn(x)
        g = torch.randn_like(y)
        y.backward(g)
        tensors.update({
            f"x{step}": x.detach(), f"grad_out{step}": g, f"out{step}": y.detach(),
            f"grad_x{step}": x.grad, f"grad_weight{step}": bn.weight.grad.clone(),
            f"grad_bias{step}": bn.bias.grad.clone(),
            f"running_mean{step}": bn.running_mean.clone(), f"running_var{step}": bn.running_var.clone(),
            f"num_batches_tracked{step}": bn.num_batches_tracked.clone(),
        })
    save(tensors, os.path.join(out_dir, "batch_norm.safetensors"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "grad"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    x = torch.randn(2, 3, 5, 7)
    for ac in (False, True):
        for tag, size in (("up", (9, 13)), ("down", (3, 4)), ("mixed", (8, 5))):
            case(args.out, f"upsample_{tag}_ac{int(ac)}", x,
                 lambda t, size=size, ac=ac: F.interpolate(t, size=size, mode="bilinear", align_corners=ac))

    x = torch.randn(2, 3, 9, 8)
    ties = torch.randint(-2, 3, (2, 3, 9, 8)).float()  # equal values: torch's first maximum wins
    case(args.out, "maxpool_stem", x, nn.MaxPool2d(3, 2, padding=1))
    case(args.out, "maxpool_stem_ties", ties, nn.MaxPool2d(3, 2, padding=1))
    case(args.out, "maxpool_ceil", x, nn.MaxPool2d(3, 2, padding=1, ceil_mode=True))
    case(args.out, "avgpool_resnetd", x[..., :7], nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False))
    case(args.out, "avgpool_pad_include", x, nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=True))
    case(args.out, "avgpool_pad_exclude", x, nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False))
    case(args.out, "avgpool_same", x, AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False))

    d = 16
    x = torch.randn(2, 5, d) * 2 + 0.5
    affine = {"weight": torch.randn(d) * 0.5 + 1, "bias": torch.randn(d) * 0.5}
    case(args.out, "layer_norm", x, lambda t, weight, bias: F.layer_norm(t, (d,), weight, bias, 1e-6), affine)
    case(args.out, "rms_norm", x, lambda t, weight: F.rms_norm(t, (d,), weight, 1e-6), {"weight": affine["weight"]})
    case(args.out, "softmax", torch.randn(3, 4, 17) * 3, lambda t: torch.softmax(t, dim=-1))
    batch_norm_case(args.out)


if __name__ == "__main__":
    main()
