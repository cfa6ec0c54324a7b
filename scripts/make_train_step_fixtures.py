"""A composed check of the training pieces (src/train/): a tiny segmentation net
conv3x3 -> BatchNorm2d (train) -> ReLU -> MaxPool2d(3, 2, 1) -> AvgPool2d(2, 2, ceil_mode,
count_include_pad=False) -> conv1x1 -> bilinear upsampling back to the input size, trained
with pixel-averaged cross-entropy by SGD with momentum over the experiment's parameter groups
(backbone at lr, head at 10 x lr, 1-D parameters without weight decay) under main.py's
LambdaLR. Seeded, CPU, one thread; writes tests/fixtures/train_step/tiny.safetensors:
initial weights `init.<name>`, the batches `image<k>` / `label<k>`, the loss of every step
`loss` (K,), the weights and BatchNorm buffers after the last step `final.<name>`.
Usage: /tmp/venv/bin/python scripts/make_train_step_fixtures.py [--out DIR]
"""

import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

STEPS = 5
LR, START_LR, MULT, POWER, WD, MOMENTUM, WARMUP_RATIO = 0.01, 1e-6, 10.0, 0.9, 5e-4, 0.9, 0.3


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = F.max_pool2d(y, 3, 2, 1)
        y = F.avg_pool2d(y, 2, 2, ceil_mode=True, count_include_pad=False)
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "train_step"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Tiny().train()
    out = {f"init.{k}": v.clone() for k, v in model.state_dict().items()}
    groups = [dict(params=[model.conv.weight], lr=LR),
              dict(params=[model.conv.bias, model.bn.weight, model.bn.bias], weight_decay=0.0, lr=LR),
              dict(params=[model.head.weight], lr=MULT * LR),
              dict(params=[model.head.bias], weight_decay=0.0, lr=MULT * LR)]
    opt = torch.optim.SGD(groups, lr=LR, weight_decay=WD, momentum=MOMENTUM)
    train_iters = STEPS - 1
    w = WARMUP_RATIO * train_iters
    lr_lambda = lambda i: max(START_LR / LR, i / w) if i < w else (1. - (i - w) / (train_iters - w)) ** POWER
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lr_lambda)
    losses = []
    for step in range(1, STEPS + 1):
        image = torch.randn(2, 3, 9, 10)
        label = torch.randint(0, 3, (2, 9, 10))
        out[f"image{step}"], out[f"label{step}"] = image, label
        opt.zero_grad()
        loss = F.cross_entropy(model(image), label)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    out["loss"] = torch.tensor(losses, dtype=torch.float64)
    out.update({f"final.{k}": v.clone() for k, v in model.state_dict().items()})
    path = os.path.join(args.out, "tiny.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    os.chmod(path, 0o644)


if __name__ == "__main__":
    main()
