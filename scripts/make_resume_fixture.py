"""A tiny checkpoint in main.py's format with a non-empty AdamW state, for the .pth resume
reader (src/train/checkpoint.rs): two parameters trained 3 steps by torch's AdamW under a
LambdaLR, saved as main.py saves {"epoch", "state_dict", "optimizer", "lr_scheduler"}.
Writes tests/fixtures/train_resume/adamw_epoch3.pth and, for comparison,
adamw_epoch3.expected.safetensors (the optimizer state as `{i}.{key}` tensors, plus
`epoch` and `last_epoch`).
Usage: /tmp/venv/bin/python scripts/make_resume_fixture.py [--out DIR]
"""

import argparse
import os

import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train_resume"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 2))
    bias = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([dict(params=[weight], lr=1e-3), dict(params=[bias], lr=1e-2, weight_decay=0.0)],
                            lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda i: 1.0 - i / 10)
    for _ in range(3):
        opt.zero_grad()
        (weight.sum() ** 2 + (bias ** 3).sum()).backward()
        opt.step()
        sched.step()
    state = {"epoch": 3, "state_dict": {"weight": weight.detach(), "bias": bias.detach()},
             "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()}
    torch.save(state, os.path.join(args.out, "adamw_epoch3.pth"))
    expected = {"epoch": torch.tensor(3), "last_epoch": torch.tensor(sched.last_epoch)}
    for i, s in opt.state_dict()["state"].items():
        for key, value in s.items():
            expected[f"{i}.{key}"] = value.clone()
    save_file(expected, os.path.join(args.out, "adamw_epoch3.expected.safetensors"))


if __name__ == "__main__":
    main()
