"""Torch references for the training losses (src/train/loss/), from the reference code itself:

- the experiment's criterion: RankSEG-RMA `losses.get_criterion` (FocalLoss, `focal_gamma`)
  weighted by its `models.segmentor.Segmentor.forward_loss`;
- JDTLosses' losses: zifuwanggg/JDTLosses `losses.get_criterion` (FocalLoss + JDTLoss)
  weighted by its `Segmentor.forward_loss_hard_label` (total = loss_ce + loss_jdt, as its
  train_hard_label.py);
- the JMLR RankSEG losses: statmlben/rankseg pytorch-segmentation-rankseg/utils/losses.py
  (FocalLoss, BCEWithLogitsLoss2d, DiceLoss, BDiceLoss, LovaszSoftmax -> Berman's
  lovasz_losses.py), given targets as its trainer.py builds them (one-hot `target == k` for
  the BCE losses and, for the multi-class B-soft-Dice, BDiceLoss), weighted as the RMA
  segmentor weights its criterion.

The segmentors' loss methods run unbound on a stand-in `self` whose `forward` returns fixed
logits, so their weighting is the code's own. Each loss is evaluated in float32 (the
fixture) and float64 (torch's own float32 noise, recorded in manifest.json).

Inputs: tests/fixtures/loss/inputs_<set>.safetensors (logits_main, logits_aux float32
(B, C, H, W), labels int64 (B, H, W) with ignored pixels = C, the experiment's mapping of
255; set `soft`: logits_main and soft_labels (B, C, H, W) for JDTLoss's soft-label branch,
`soft_cases` in the manifest). Per case <case>.safetensors: value (1,), grad_main, grad_aux (zeros where torch
leaves no gradient; manifest `aux_grad`). manifest.json: per case the loss yaml (the keys
of configs/losses/*.yaml), the label set, and the float32-vs-float64 differences.

Seeded, CPU, one thread; nothing is downloaded. Usage:
  /tmp/venv/bin/python scripts/make_loss_fixtures.py --rma-exp /tmp/rma/exp \\
      --jdt-losses DIR --jmlr DIR/pytorch-segmentation-rankseg [--out tests/fixtures/loss]
(defaults from $RMA_EXP, $JDTLOSSES, $JMLR_RANKSEG). JDTLosses and the JMLR tree are
checkouts of github zifuwanggg/JDTLosses and statmlben/rankseg. The JMLR utils/losses.py
imports sklearn for an unused helper and RMA's models/methods/cpt.py imports mmcv (the "cpt"
method only); empty stand-in modules are used when they are absent.
"""

import argparse
import copy
import importlib
import json
import os
import sys
import types
from glob import glob

import torch
import yaml
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
B, C, H, W = 3, 5, 8, 9


def load_tree(root, names):
    """Imports `names` from the source tree `root`, then forgets the tree's top-level
    packages so the next tree's same-named packages (losses, models, utils) load afresh."""
    before = set(sys.modules)
    sys.path.insert(0, root)
    try:
        mods = [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(root)
        tops = {n.split(".")[0] for n in names}
        for k in set(sys.modules) - before:
            if k.split(".")[0] in tops:
                del sys.modules[k]
    return mods


def stub_mmcv():
    """RMA's models/methods/cpt.py imports mmcv (only its "cpt" method uses it)."""
    if "mmcv" not in sys.modules:
        mm = types.ModuleType("mmcv")
        mm.cnn = types.ModuleType("mmcv.cnn")
        sys.modules.update({"mmcv": mm, "mmcv.cnn": mm.cnn})


def stub_sklearn():
    try:
        import sklearn.utils  # noqa: F401
    except ImportError:
        sk, sku = types.ModuleType("sklearn"), types.ModuleType("sklearn.utils")
        sku.class_weight = types.ModuleType("sklearn.utils.class_weight")
        sk.utils = sku
        sys.modules.update({"sklearn": sk, "sklearn.utils": sku, "sklearn.utils.class_weight": sku.class_weight})


def label_sets():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, C, (B, H, W), generator=g)
    a[torch.rand(B, H, W, generator=g) < 0.15] = C
    a[2][a[2] == 3] = 1  # image 2 lacks class 3
    b = torch.randint(0, 2, (B, H, W), generator=g)  # image 0: classes 0, 1 only
    b[1] = C  # image 1: every pixel ignored
    b[2] = torch.randint(0, C + 1, (H, W), generator=g)
    # Soft labels for JDTLoss's soft branch; class 3 of image 0 stays below the 0.01 threshold.
    soft = torch.softmax(torch.randn(B, C, H, W, generator=g) * 3, dim=1)
    soft[0, 3] *= 1e-5
    soft = soft / soft.sum(1, keepdim=True)
    sets = {"soft": {"soft_labels": soft, "logits_main": torch.randn(B, C, H, W, generator=g) * 2}}
    for name, lab in (("a", a), ("b", b)):
        sets[name] = {
            "labels": lab,
            "logits_main": torch.randn(B, C, H, W, generator=g) * 2,
            "logits_aux": torch.randn(B, C, H, W, generator=g) * 2,
        }
    return sets


def onehot_like_trainer(logits, label):
    """trainer.py: target_oh[:, k] = torch.where(target == k, 1, 0)."""
    target_oh = torch.zeros_like(logits)
    for k in range(logits.shape[1]):
        target_oh[:, k] = torch.where(label == k, 1, 0)
    return target_oh


class Refs:
    def __init__(self, args):
        stub_mmcv()
        self.rma_crit, self.rma_seg = load_tree(args.rma_exp, ["losses.get_criterion", "models.segmentor"])
        self.jdt_crit, self.jdt_seg = load_tree(args.jdt_losses, ["losses.get_criterion", "models.segmentor"])
        stub_sklearn()
        (self.jmlr,) = load_tree(args.jmlr, ["utils.losses"])

    def total(self, cfg, main, aux, label):
        """The reference training loss for loss yaml `cfg`."""
        args = types.SimpleNamespace(loss_config=cfg, data_config={"num_classes": C}, label_config={"HARD": True})
        fake = types.SimpleNamespace(
            forward=lambda _x: (main, aux), aux=True, method=None,
            main_weight=cfg["main_weight"], aux_weight=cfg["aux_weight"])
        if "jmlr_loss" in cfg:
            fake.criterion = self.jmlr_criterion(cfg["jmlr_loss"])
            return self.rma_seg.Segmentor.forward_loss(fake, None, label)
        if "ce_weight" in cfg:
            fake.criterion_ce, _, fake.criterion_jdt = self.jdt_crit.get_criterion(args)
            fake.ce_weight, fake.jdt_weight = cfg["ce_weight"], cfg["jdt_weight"]
            loss_ce, loss_jdt = self.jdt_seg.Segmentor.forward_loss_hard_label(fake, None, label)
            return (loss_ce + loss_jdt).reshape(())
        fake.criterion = self.rma_crit.get_criterion(args)
        return self.rma_seg.Segmentor.forward_loss(fake, None, label)

    def jmlr_criterion(self, name):
        loss = getattr(self.jmlr, name)(ignore_index=C)

        def criterion(logits, label, keep_mask=None):
            if name in ("BCEWithLogitsLoss2d", "BDiceLoss"):
                return loss(logits, onehot_like_trainer(logits, label))
            return loss(logits, label.clone())  # DiceLoss rewrites ignored labels in place
        return criterion


def evaluate(refs, cfg, inputs, dtype):
    main = inputs["logits_main"].detach().to(dtype).clone().requires_grad_(True)
    aux = inputs["logits_aux"].detach().to(dtype).clone().requires_grad_(True)
    value = refs.total(copy.deepcopy(cfg), main, aux, inputs["labels"].clone())
    value.backward()
    return value.detach(), main.grad, aux.grad


def cases():
    out = []
    for path in sorted(glob(os.path.join(ROOT, "configs", "losses", "*.yaml"))):
        with open(path) as f:
            cfg = yaml.safe_load(f)
        name = os.path.basename(path)[:-5]
        out.append((name, cfg, "a"))
        if name in ("ce", "dice_ic_present_all", "dice_d_present_all", "soft_dice", "lovasz_softmax"):
            out.append((f"{name}_b", cfg, "b"))
    out += [
        ("focal_gamma2", {"main_weight": 0.5, "aux_weight": 0.5, "focal_gamma": 2.0}, "a"),
        ("focal_gamma05_b", {"main_weight": 1.0, "aux_weight": 0.4, "focal_gamma": 0.5}, "b"),
        ("ce_no_aux", {"main_weight": 1.0, "aux_weight": 0.0}, "a"),
        ("tversky_all_log", {
            "main_weight": 0.7, "aux_weight": 0.3, "ce_weight": 0.5, "jdt_weight": 1.0,
            "mIoUD": 0.4, "mIoUI": 0.3, "mIoUC": 0.3, "alpha": 0.3, "beta": 0.7, "gamma": 2.0,
            "smooth": 0.5, "threshold": 0.01, "log_loss": True,
            "class_weights": [1.0, 0.5, 2.0, 1.5, 0.8],
            "active_classes_mode_hard": "ALL", "active_classes_mode_soft": "ALL"}, "b"),
        ("jaccard_gamma3_present", {
            "main_weight": 0.5, "aux_weight": 0.5, "ce_weight": 0.0, "jdt_weight": 1.0,
            "mIoUD": 0.2, "mIoUI": 0.5, "mIoUC": 0.3, "alpha": 1.0, "beta": 1.0, "gamma": 3.0,
            "smooth": 0.001, "threshold": 0.01, "log_loss": False, "class_weights": None,
            "active_classes_mode_hard": "PRESENT", "active_classes_mode_soft": "ALL"}, "b"),
    ]
    return out


def soft_cases(refs):
    """JDTLoss on soft labels (`criterion_jdt(logits, soft_label)`, no keep mask): the
    shipped dice_ic_present_all (soft mode ALL) and a Tversky mix with soft mode PRESENT."""
    with open(os.path.join(ROOT, "configs", "losses", "dice_ic_present_all.yaml")) as f:
        dice = yaml.safe_load(f)
    tversky = dict(dice, mIoUD=0.4, mIoUI=0.3, mIoUC=0.3, alpha=0.3, beta=0.7, gamma=2.0,
                   active_classes_mode_soft="PRESENT")
    return [("soft_dice_ic_present_all", dice), ("soft_tversky_present", tversky)]


def evaluate_soft(refs, cfg, inputs, dtype):
    args = types.SimpleNamespace(loss_config=cfg, data_config={"num_classes": C}, label_config={"HARD": True})
    _, _, jdt = refs.jdt_crit.get_criterion(args)
    logits = inputs["logits_main"].detach().to(dtype).clone().requires_grad_(True)
    value = jdt(logits, inputs["soft_labels"].to(dtype))
    value.backward()
    return value.detach(), logits.grad


def max_abs(a, b):
    if b is None:
        return None
    return float((a.double() - b.double()).abs().max()) if a is not None else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rma-exp", default=os.environ.get("RMA_EXP", "/tmp/rma/exp"))
    ap.add_argument("--jdt-losses", default=os.environ.get("JDTLOSSES", "/tmp/jdtlosses"))
    ap.add_argument("--jmlr", default=os.environ.get("JMLR_RANKSEG", "/tmp/jmlr/pytorch-segmentation-rankseg"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "loss"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    refs = Refs(args)
    os.makedirs(args.out, exist_ok=True)
    sets = label_sets()
    for name, t in sets.items():
        save(t, os.path.join(args.out, f"inputs_{name}.safetensors"))
    manifest = {"torch": torch.__version__, "shape": [B, C, H, W], "cases": {}}
    for name, cfg, lset in cases():
        v32, gm32, ga32 = evaluate(refs, cfg, sets[lset], torch.float32)
        try:
            v64, gm64, ga64 = evaluate(refs, cfg, sets[lset], torch.float64)
        except RuntimeError as e:
            # Berman's lovasz_grad makes float32 weights (`fg.float()`): torch.dot refuses
            # float64 errors, so the reference runs in float32 only.
            print(f"{name}: no float64 reference ({e})")
            v64 = gm64 = ga64 = None
        zeros = torch.zeros(B, C, H, W)
        save({"value": v32.reshape(1), "grad_main": gm32,
              "grad_aux": ga32 if ga32 is not None else zeros},
             os.path.join(args.out, f"{name}.safetensors"))
        manifest["cases"][name] = {
            "yaml": cfg, "labels": lset, "aux_grad": ga32 is not None, "value": float(v32),
            "torch_f32_vs_f64": {"value": max_abs(v32, v64), "grad_main": max_abs(gm32, gm64),
                                 "grad_aux": max_abs(ga32, ga64)},
        }
        d = manifest["cases"][name]["torch_f32_vs_f64"]
        print(f"{name:24} {float(v32):.6f}  torch f32-f64: {d}")
    manifest["soft_cases"] = {}
    for name, cfg in soft_cases(refs):
        v32, g32 = evaluate_soft(refs, cfg, sets["soft"], torch.float32)
        v64, g64 = evaluate_soft(refs, cfg, sets["soft"], torch.float64)
        save({"value": v32.reshape(1), "grad_main": g32}, os.path.join(args.out, f"{name}.safetensors"))
        d = {"value": max_abs(v32, v64), "grad_main": max_abs(g32, g64)}
        manifest["soft_cases"][name] = {"yaml": cfg, "value": float(v32), "torch_f32_vs_f64": d}
        print(f"{name:24} {float(v32):.6f}  torch f32-f64: {d}")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def save(tensors, path):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path)
    os.chmod(path, 0o644)


if __name__ == "__main__":
    main()
