#!/usr/bin/env python3
"""Write the model-zoo fixtures (tests/fixtures/zoo/).

    /tmp/venv/bin/python scripts/make_zoo_fixtures.py [--rma-exp /tmp/rma/exp] [--out tests/fixtures/zoo]
        [--lits-slices tests/fixtures/exp/lits_slices] [--lits-yaml tests/fixtures/exp/lits_small.yaml]

Every model is the experiment's own `Segmentor(model_config, data_config,
loss_config={"main_weight": 1.0, "aux_weight": 0.4}, criterion=None)` imported from
`--rma-exp` (a checkout of ZixunWang/RankSEG-RMA `exp/`, commit 4ccb5d5, read only), in
`.eval()`; logits = `model(x)[0]` under `torch.no_grad()`.

Nothing is downloaded:
* `timm.create_model` is wrapped so that it always gets `pretrained=False` (the experiment's
  Backbone asks for `pretrained=True`);
* the MiT branch's `model_zoo.load_url(url)` is replaced by a function returning the just
  built encoder's own state_dict (so its strict `load_state_dict` is a no-op);
* `models/methods/cpt.py` imports `mmcv` (not installed; only the "cpt" method uses it): an
  empty stand-in module is put in `sys.modules` before the import.
* mit_b5: the experiment's backbone allow-list misses a comma (`"mobilevitv2_100" "mit_b5"`
  is one string, "mobilevitv2_100mit_b5"), so `Backbone("mit_b5", ...)` raises
  NotImplementedError.  For the segformer_mit_b5 case the script builds that backbone itself
  exactly as the MiT branch does (`mix_transformer_encoders["mit_b5"]`'s encoder(**params),
  `out_channels = encoder.out_channels`, `load_state_dict(load_url(url))`), via a Backbone
  subclass that models/segmentor.py sees only while that one model is constructed; the module
  tree and the state-dict keys are the same as the branch would give.

Weights ("formula weights", bit-reproducible elsewhere; see README.md "Formula"): for every
state-dict entry, in state-dict order, a SplitMix64 stream seeded by FNV-1a 64 of the key;
loaded with `load_state_dict(sd, strict=True)`.

Also written: real checkpoint files of a small DeepLabV3+ / MobileNetV2 (pth/: what the
experiment's main.py saves, with every floating tensor a view into one shared storage so the
files stay small, plus corrupt / mismatching variants), and an end-to-end LiTS case
(lits_unet/: unet_resnet18d with formula weights on tests/fixtures/exp/lits_slices, evaluated
as test_medical does: the experiment's LiTS dataset, Segmentor.multi_scale_predict, argmax /
rankseg_rma.py / rankseg_ba.py, per-case metrics by scripts/reference_metrics.py averaged over
the validation cases).

CPU, one thread, fixed seeds: rerunning gives identical files.  The output folder is built in a
temporary directory next to it and then swapped in.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep scripts/ and the (read-only) experiment checkout clean

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import types
import warnings
import zipfile
from collections import OrderedDict

import cv2
import numpy as np
import scipy
import timm
import torch
import yaml
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "zoo")
DEFAULT_LITS = os.path.join(ROOT, "tests", "fixtures", "exp", "lits_slices")
DEFAULT_LITS_YAML = os.path.join(ROOT, "tests", "fixtures", "exp", "lits_small.yaml")
EXP_COMMIT = "4ccb5d5"
SIZE_LIMIT = 12 * 2 ** 20  # whole folder (bytes)
PTH_LIMIT = 3_000_000     # each .pth
LOSS_CONFIG = {"main_weight": 1.0, "aux_weight": 0.4}
GAIN = 1.0
# lits_unet: with gain 1.0 the UNet's class-1 probability stays in [0.47, 0.57] on every slice and
# rankseg_rma / rankseg_ba select (nearly) every pixel; 1.25 spreads it to ~[0.16, 0.85]
LITS_GAIN = 1.25
LOGIT_TINY, LOGIT_HUGE = 0.05, 1e4

sys.path.insert(0, HERE)
from fixtureutil import (add_slice_predictions, build_dir, deterministic_cpu, experiment_accuracy,  # noqa: E402
                         file_sizes, fixture_parser, lits_dataset, lits_predictors, lits_results, lits_split,
                         reference_diff, run_predictors, swap_in)

# ------------------------------------------------------------------------------ formula
MASK64 = (1 << 64) - 1
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def fnv1a64(name: str) -> int:
    h = FNV_OFFSET
    for b in name.encode("utf-8"):
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def unit_stream(seed: int, n: int) -> np.ndarray:
    """u_i in [0, 1), i = 0..n-1 (float64): SplitMix64 of seed + (i+1) * GOLDEN, top 24 bits."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    z = np.uint64(seed) + i * np.uint64(GOLDEN)          # uint64 arrays wrap mod 2^64
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 16777216.0


def unit_scalar(seed: int, i: int) -> float:
    """Pure-Python u_i (checks unit_stream)."""
    z = (seed + (i + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    z ^= z >> 31
    return float(z >> 40) / 16777216.0


def formula_tensor(name: str, shape, dtype, gain: float = GAIN) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    if name.endswith("num_batches_tracked"):
        assert dtype == torch.int64 and shape == (), (name, dtype, shape)
        return torch.zeros((), dtype=torch.int64)
    assert dtype == torch.float32, (name, dtype)
    n = math.prod(shape)
    u = unit_stream(fnv1a64(name), n)
    r = 2.0 * u - 1.0
    if name.endswith("running_var"):
        v = 0.5 + u
    elif name.endswith("running_mean"):
        v = 0.1 * r
    elif len(shape) == 1 and (name.endswith(".weight") or name.endswith("gamma")):
        v = 1.0 + 0.2 * r
    elif len(shape) == 1:
        v = 0.1 * r
    elif len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        v = r * math.sqrt(3.0 / fan_in) * gain
    else:
        raise ValueError(f"{name}: no formula for shape {shape}")
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def formula_state_dict(model, gain=GAIN):
    return OrderedDict((k, formula_tensor(k, v.shape, v.dtype, gain)) for k, v in model.state_dict().items())


def check_formula():
    for name in ("backbone.backbone.conv1.0.weight", "head.1.bias", ""):
        s = fnv1a64(name)
        u = unit_stream(s, 1000)
        for i in (0, 1, 7, 999):
            assert u[i] == unit_scalar(s, i), (name, i)
    assert fnv1a64("") == FNV_OFFSET and fnv1a64("a") == 0xAF63DC4C8601EC8C


def keys_json(sd):
    out = []
    for k, v in sd.items():
        dt = {torch.float32: "F32", torch.int64: "I64"}[v.dtype]
        out.append([k, dt, list(v.shape)])
    return out


# ------------------------------------------------------------------------------ experiment
class Exp:
    """The experiment's modules, imported with the download / mmcv stand-ins in place."""

    def __init__(self, rma):
        self.rma = rma
        if "mmcv" not in sys.modules:
            mm = types.ModuleType("mmcv")
            mm.cnn = types.ModuleType("mmcv.cnn")
            sys.modules["mmcv"], sys.modules["mmcv.cnn"] = mm, mm.cnn
        sys.path.insert(0, rma)
        self.timm_calls = []
        real_create = timm.create_model

        def create_model(name, *args, **kwargs):
            self.timm_calls.append((name, {k: v for k, v in kwargs.items()}))
            kwargs["pretrained"] = False
            return real_create(name, *args, **kwargs)

        timm.create_model = create_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import models.segmentor as segmentor  # noqa: E402
            import models.backbones.backbone as backbone  # noqa: E402
            import models.backbones.mit as mit  # noqa: E402
        self.segmentor, self.backbone, self.mit = segmentor, backbone, mit
        for m in (segmentor, backbone, mit):
            assert os.path.abspath(m.__file__).startswith(rma), m.__file__
        assert backbone.timm is timm

        # MiT: load_url returns the state_dict of the encoder that was just built
        self.built_encoders = []
        self.urls = []
        for name, entry in mit.mix_transformer_encoders.items():
            cls = entry["encoder"]

            def make(_cls=cls, **params):
                enc = _cls(**params)
                self.built_encoders.append(enc)
                return enc

            entry["encoder"] = make
            entry["_class"] = cls

        def load_url(url, *args, **kwargs):
            self.urls.append(url)
            return OrderedDict((k, v.clone()) for k, v in self.built_encoders[-1].state_dict().items())

        backbone.model_zoo = types.SimpleNamespace(load_url=load_url)

        import rankseg_ba  # noqa: E402  (the experiment's)
        import rankseg_rma  # noqa: E402
        self.rankseg_rma, self.rankseg_ba = rankseg_rma, rankseg_ba
        self.medical_dataset = __import__("datas.datasets.medical_dataset", fromlist=["x"])
        self.lits = __import__("datas.datasets.lits", fromlist=["x"])
        self.accuracy_metric = __import__("metrics.accuracy_metric", fromlist=["x"])
        self.focal_loss = __import__("losses.focal_loss", fromlist=["x"])
        self.utils = __import__("utils")
        for m in (rankseg_rma, rankseg_ba, self.lits, self.accuracy_metric, self.focal_loss, self.utils):
            assert os.path.abspath(m.__file__).startswith(rma), m.__file__

    @contextlib.contextmanager
    def mit_b5_allowed(self):
        """models/segmentor.py's Backbone, for this block only, builds mit_b5 the way the MiT
        branch of Backbone.__init__ does (the allow-list drops the name)."""
        Orig = self.backbone.Backbone
        encoders = self.mit.mix_transformer_encoders
        bbmod = self.backbone

        class Backbone(Orig):
            def __init__(self, backbone, in_channels, output_stride, image_size):
                if backbone != "mit_b5":
                    super().__init__(backbone, in_channels, output_stride, image_size)
                    return
                nn.Module.__init__(self)
                encoder = encoders[backbone]["encoder"]
                params = encoders[backbone]["params"]
                settings = encoders[backbone]["pretrained_settings"]["imagenet"]
                self.backbone = encoder(**params)
                self.out_channels = self.backbone.out_channels
                self.backbone.load_state_dict(bbmod.model_zoo.load_url(settings["url"]))

        self.segmentor.Backbone = Backbone
        try:
            yield
        finally:
            self.segmentor.Backbone = Orig

    def build(self, model_config, data_config, criterion=None):
        """Segmentor in eval mode (with the mit_b5 bypass when needed)."""
        torch.manual_seed(0)  # the experiment's own init draws; all of it is overwritten
        n_enc = len(self.built_encoders)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if model_config["backbone"] == "mit_b5":
                with expect_raises(NotImplementedError):
                    self.segmentor.Segmentor(model_config, data_config, LOSS_CONFIG, criterion)
                with self.mit_b5_allowed():
                    model = self.segmentor.Segmentor(model_config, data_config, LOSS_CONFIG, criterion)
            else:
                model = self.segmentor.Segmentor(model_config, data_config, LOSS_CONFIG, criterion)
        if model_config["backbone"].startswith("mit_"):
            assert len(self.built_encoders) >= n_enc + 1 and model.backbone.backbone is self.built_encoders[-1]
        return model.eval()


@contextlib.contextmanager
def expect_raises(exc):
    try:
        yield
    except exc:
        return
    raise AssertionError(f"expected {exc.__name__}")


# ------------------------------------------------------------------------------ yaml text
def set_yaml_keys(text, values):
    """Replace the value of top-level `key: value` lines (each key must occur once)."""
    lines = text.split("\n")
    for key, val in values.items():
        idx = [i for i, l in enumerate(lines) if l.startswith(f"{key}: ")]
        assert len(idx) == 1, (key, idx)
        lines[idx[0]] = f"{key}: {val}"
    return "\n".join(lines)


def yaml_list(v):
    return "[" + ", ".join(str(x) for x in v) + "]"


# ------------------------------------------------------------------------------ cases
# name, shipped model yaml (or None), yaml edits (custom), crop, classes, channels, batch, aux
CASES = [
    dict(name="deeplabv3_resnet18d", yaml="deeplabv3_resnet18d", crop=[64, 96], classes=21, ch=3, batch=2),
    dict(name="deeplabv3plus_resnet50d", yaml="deeplabv3plus_resnet50d", classes=2, ch=1),
    dict(name="deeplabv3plus_resnet34d", yaml="deeplabv3plus_resnet34d", classes=5, aux=True),
    dict(name="deeplabv3plus_efficientnet_b0", yaml="deeplabv3plus_efficientnet_b0", classes=21),
    dict(name="deeplabv3_mobilenetv2_100", yaml="deeplabv3_mobilenetv2_100", crop=[96, 64], classes=3),
    dict(name="deeplabv3plus_mobilenetv2_100_os16_ac", yaml="deeplabv3plus_mobilenetv2_100",
         edit={"output_stride": "16", "align_corners": "True"}, classes=4),
    dict(name="pspnet_resnet50d", yaml="pspnet_resnet50d", crop=[72, 72], classes=4),
    dict(name="unet_resnet50d", yaml="unet_resnet50d", classes=2, ch=1, aux=True),
    dict(name="unet_mobilenetv2_100", yaml="unet_mobilenetv2_100", crop=[64, 96], classes=3),
    dict(name="unet_resnet18d", yaml="unet_resnet18d", classes=3),
    dict(name="upernet_resnet101d", yaml="upernet_resnet101d", classes=3),
    dict(name="upernet_convnext_base", yaml="upernet_convnext_base.fb_in22k_ft_in1k_384", classes=3),
    dict(name="upernet_mit_b4", yaml="upernet_mit_b4", classes=5),
    dict(name="segformer_mit_b0", yaml="segformer_mit_b0", crop=[64, 96], classes=3),
    dict(name="segformer_mit_b5", yaml="segformer_mit_b5", classes=5),
    dict(name="deeplabv3plus_resnet152d_os16", yaml="deeplabv3plus_resnet101d",
         edit={"backbone": '"resnet152d"', "output_stride": "16", "dropout": "0.0", "aux": "False"}, classes=3),
    dict(name="segformer_mit_b2_19cls", yaml="segformer_mit_b2", classes=19),
]
PTH_MODEL_EDIT = {"out_channels": "16", "aux_out_channels": "8", "shortcut_channels": "4", "output_stride": "8"}
PTH_CROP, PTH_CLASSES = [64, 64], 3
PTH_B_FACTOR = 4  # storage B holds 4x its largest tensor (room for distinct offsets)
# Storage A's values are 0.35 (2u - 1): weights of +-1 make activations grow ~10x per layer,
# ReLU6 saturates everywhere and the logits (~700) become chaotic in the last float bits.
PTH_A_SCALE = 0.35


def in_storage_b(key, tensor):
    """running_var and the norms' scales (rank-1 `.weight`) live in the positive storage B."""
    return key.endswith("running_var") or (tensor.dim() == 1 and key.endswith(".weight"))


def data_yaml_text(voc_text, crop, classes, ch):
    return set_yaml_keys(voc_text, {"in_channels": str(ch), "num_classes": str(classes),
                                    "crop_size": yaml_list(crop)})


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr))


# case whose keys the README lists, per backbone family
KEY_EXAMPLES = {"resnet, BasicBlock (resnet18d / 34d)": "deeplabv3_resnet18d",
                "resnet, Bottleneck (resnet50d / 101d / 152d)": "pspnet_resnet50d",
                "efficientnet": "deeplabv3plus_efficientnet_b0", "mobilenetv2": "deeplabv3_mobilenetv2_100",
                "convnext": "upernet_convnext_base", "mit": "segformer_mit_b0"}


def backbone_facts(model, x):
    """Segmentor.backbone.out_channels, timm feature_info, and the real feature shapes."""
    bb = model.backbone
    facts = {"segmentor_backbone_out_channels": [int(c) for c in bb.out_channels]}
    fi = getattr(bb.backbone, "feature_info", None)
    if fi is not None and hasattr(fi, "channels"):
        facts["feature_info_channels"] = [int(c) for c in fi.channels()]
        facts["feature_info_reduction"] = [int(c) for c in fi.reduction()]
        facts["feature_info_module"] = list(fi.module_name())
    with torch.no_grad():
        feats = bb(x)
    facts["features"] = [list(f.shape[1:]) for f in feats]  # [C, H, W] per entry, entry 0 = input
    return facts


def run_case(exp, tmp, case, idx, voc_text, cfgdir):
    d = os.path.join(tmp, case["name"])
    os.makedirs(d)
    src_yaml = os.path.join(cfgdir, "models", case["yaml"] + ".yaml")
    text = open(src_yaml).read()
    if "edit" in case:
        text = set_yaml_keys(text, case["edit"])
    with open(os.path.join(d, "model.yaml"), "w") as f:
        f.write(text)
    crop, classes, ch, batch = case.get("crop", [64, 64]), case["classes"], case.get("ch", 3), case.get("batch", 1)
    dtext = data_yaml_text(voc_text, crop, classes, ch)
    with open(os.path.join(d, "data.yaml"), "w") as f:
        f.write(dtext)
    mc, dc = yaml.safe_load(text), yaml.safe_load(dtext)
    assert list(dc) == list(yaml.safe_load(voc_text))
    model = exp.build(mc, dc)
    gain = case.get("gain", GAIN)
    sd = formula_state_dict(model, gain)
    model.load_state_dict(sd, strict=True)
    got = model.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    rng = np.random.default_rng(1000 + idx)
    x = rng.standard_normal((batch, ch, crop[0], crop[1])).astype(np.float32)
    with torch.no_grad():
        logits, aux = model(torch.from_numpy(x))
    logits = logits.numpy()
    assert logits.shape == (batch, classes, crop[0], crop[1]) and logits.dtype == np.float32, logits.shape
    assert np.isfinite(logits).all()
    save_npy(os.path.join(d, "input.npy"), x)
    save_npy(os.path.join(d, "logits.npy"), logits)
    with open(os.path.join(d, "keys.json"), "w") as f:
        json.dump(keys_json(sd), f)
        f.write("\n")
    mx = float(np.abs(logits).max())
    info = {
        "model_yaml": "model.yaml",
        "model_yaml_source": None if "edit" in case else f"configs/models/{case['yaml']}.yaml",
        "model_yaml_edits": case.get("edit"),
        "data_yaml": "data.yaml",
        "backbone": mc["backbone"], "method": mc["method"], "output_stride": mc["output_stride"],
        "align_corners": mc["align_corners"], "aux": mc["aux"],
        "in_channels": ch, "num_classes": classes, "crop_size": crop,
        "batch": batch, "gain": gain, "max_abs_logit": mx,
        "logits_shape": list(logits.shape),
        "logits_sha256_le_f32": hashlib.sha256(logits.tobytes()).hexdigest(),
        "argmax_class_counts": [int(c) for c in np.bincount(logits.argmax(1).reshape(-1), minlength=classes)],
        "logit_spatial_std": float(logits.astype(np.float64).std(axis=(2, 3)).mean()),
        "min_top2_margin": float(np.diff(np.sort(logits, axis=1)[:, -2:], axis=1).min()) if classes > 1 else None,
        "num_keys": len(sd), "num_params": int(sum(v.numel() for v in sd.values())),
        "aux_file": None,
    }
    if case.get("aux"):
        assert aux is not None
        aux = aux.numpy()
        assert aux.shape == logits.shape
        save_npy(os.path.join(d, "aux.npy"), aux)
        info["aux_file"] = "aux.npy"
        info["max_abs_aux"] = float(np.abs(aux).max())
    elif aux is None:
        info["aux_output"] = None  # aux: False -> the second output is None
    info["backbone_facts"] = backbone_facts(model, torch.from_numpy(x))
    info["mit_load_url"] = exp.urls[-1] if mc["backbone"].startswith("mit_") else None
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    flag = ""
    if mx < LOGIT_TINY or mx > LOGIT_HUGE:
        flag = "  <-- OUT OF RANGE"
    print(f"{case['name']:42s} {str(list(logits.shape)):20s} max|logit| {mx:.4g}{flag}", flush=True)
    return info, sd


# ------------------------------------------------------------------------------ pth
def view_of(storage_tensor, offset, shape):
    n = math.prod(shape)
    return storage_tensor[offset:offset + n].view(shape)


def contiguous_stride(shape):
    st, acc = [], 1
    for s in reversed(shape):
        st.append(acc)
        acc *= s
    return tuple(reversed(st))


def offset_for(key, numel, total, taken=None):
    """fnv1a64(key) % (total - numel + 1); when `taken` is given, the next free offset from there
    (+1 steps, wrapping) so that the tensors of one set get distinct offsets."""
    span = total - numel + 1
    off = fnv1a64(key) % span
    if taken is not None:
        for _ in range(span):
            if off not in taken:
                break
            off = (off + 1) % span
        else:
            raise AssertionError(f"no free offset for {key}")
        taken.add(off)
    return off


def build_pth(exp, tmp, cfgdir, voc_text):
    d = os.path.join(tmp, "pth")
    os.makedirs(d)
    text = set_yaml_keys(open(os.path.join(cfgdir, "models", "deeplabv3plus_mobilenetv2_100.yaml")).read(),
                         PTH_MODEL_EDIT)
    dtext = data_yaml_text(voc_text, PTH_CROP, PTH_CLASSES, 3)
    with open(os.path.join(d, "model.yaml"), "w") as f:
        f.write(text)
    with open(os.path.join(d, "data.yaml"), "w") as f:
        f.write(dtext)
    mc, dc = yaml.safe_load(text), yaml.safe_load(dtext)
    oc = yaml.safe_load(open(os.path.join(cfgdir, "optims", "adamw_lr6e-5.yaml")))
    sc = yaml.safe_load(open(os.path.join(cfgdir, "schedules", "40k_iters.yaml")))
    nc = dc["num_classes"]

    def new_model():
        criterion = exp.focal_loss.FocalLoss(ignore_index=nc, gamma=0)  # losses/get_criterion.py
        m = exp.build(mc, dc, criterion)
        m.load_state_dict(formula_state_dict(m), strict=True)
        return m

    def new_optim(m):
        params_list = m.get_params_list(oc["lr"], oc["multiplier"])
        opt = torch.optim.AdamW(params_list, lr=oc["lr"], weight_decay=oc["weight_decay"])
        warmup_iters = sc["warmup_ratio"] * sc["train_iters"]

        # main.py's lr_lambda (by_epoch False: train_iters from the schedule yaml)
        def lr_lambda(iteration):
            return max(oc["start_lr"] / oc["lr"], iteration / warmup_iters) if iteration < warmup_iters \
                else (1. - (iteration - warmup_iters) / (sc["train_iters"] - warmup_iters)) ** oc["power"]

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lr_lambda)

    model = new_model()
    optimizer, scheduler = new_optim(model)

    # one real training step (train.py: zero_grad, forward_loss, backward, step, scheduler.step)
    g = torch.Generator().manual_seed(5)
    image = torch.randn((2, 3) + tuple(PTH_CROP), generator=g)
    label = torch.randint(0, nc + 1, (2,) + tuple(PTH_CROP), generator=g)  # nc = ignored
    model.train()
    optimizer.zero_grad()
    loss = model.forward_loss(image, label)
    loss.backward()
    optimizer.step()
    scheduler.step()
    model.eval()
    loss_value = float(loss)

    # shared storages: A (every floating tensor, optimizer moments too) and B (running_var, > 0)
    sd_live = model.state_dict(keep_vars=True)
    floats = {k: v for k, v in sd_live.items() if v.dtype == torch.float32}
    N = max(v.numel() for v in floats.values())
    NB = PTH_B_FACTOR * max(v.numel() for k, v in floats.items() if in_storage_b(k, v))
    A = torch.from_numpy((PTH_A_SCALE * (2.0 * unit_stream(fnv1a64("zoo.pth.storage_a"), N) - 1.0)).astype(np.float32))
    B = torch.from_numpy((0.5 + unit_stream(fnv1a64("zoo.pth.storage_b"), NB)).astype(np.float32))
    offsets, taken = {}, {"A": set(), "B": set()}
    with torch.no_grad():
        for k, t in floats.items():
            src, total = (B, NB) if in_storage_b(k, t) else (A, N)
            off = offset_for(k, t.numel(), total, taken["B" if src is B else "A"])
            offsets[k] = ["B" if src is B else "A", off]
            t.set_(src.untyped_storage(), off, tuple(t.shape), contiguous_stride(tuple(t.shape)))
    for store in ("A", "B"):
        offs = [o for s, o in offsets.values() if s == store]
        assert len(set(offs)) == len(offs), f"offset collision in storage {store}"
    name_of = {id(p): n for n, p in model.named_parameters()}
    opt_offsets = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state[p]
            n = name_of[id(p)]
            for mom in ("exp_avg", "exp_avg_sq"):
                assert st[mom].shape == p.shape
                off = offset_for(f"{n}.{mom}", p.numel(), N)
                st[mom] = view_of(A, off, tuple(p.shape))
                opt_offsets.append(off)
            assert torch.is_tensor(st["step"]) and st["step"].dtype == torch.float32 and float(st["step"]) == 1.0
    sd = model.state_dict()
    for k, v in sd.items():
        if v.dtype == torch.float32:
            assert v.untyped_storage().data_ptr() in (A.untyped_storage().data_ptr(), B.untyped_storage().data_ptr())

    # logits with the view weights
    x = np.random.default_rng(3000).standard_normal((1, 3) + tuple(PTH_CROP)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))[0].numpy()
    assert logits.shape == (1, nc) + tuple(PTH_CROP)
    save_npy(os.path.join(d, "input.npy"), x)
    save_npy(os.path.join(d, "logits.npy"), logits)
    with open(os.path.join(d, "keys.json"), "w") as f:
        json.dump(keys_json(sd), f)
        f.write("\n")

    # checkpoint003.pth: main.py's dict; keys "module."-prefixed as a DDP wrapper's state_dict
    # gives them (the wrapper is a plain Module holding the model as `.module`, like DDP)
    wrapper = nn.Module()
    wrapper.module = model
    sd_prefixed = wrapper.state_dict()
    assert list(sd_prefixed) == ["module." + k for k in sd]
    state = {"epoch": 3, "state_dict": sd_prefixed, "optimizer": optimizer.state_dict(),
             "lr_scheduler": scheduler.state_dict()}
    ckpt = os.path.join(d, "checkpoint003.pth")
    torch.save(state, ckpt)
    torch.save(sd, os.path.join(d, "state_dict.pth"))

    def variant(mutate):
        v = OrderedDict(sd)
        v._metadata = copy.deepcopy(sd._metadata)
        mutate(v)
        return v

    wrong_key, missing_key, extra_key = "head.1.weight", "method.bottleneck.1.weight", "method.extra.weight"
    assert wrong_key in sd and missing_key in sd and extra_key not in sd
    wrong_shape = [nc + 1] + list(sd[wrong_key].shape[1:])

    def mut_wrong(v):
        v[wrong_key] = view_of(A, offset_for(wrong_key + ".wrong", math.prod(wrong_shape), N), tuple(wrong_shape))

    def mut_missing(v):
        del v[missing_key]

    def mut_extra(v):
        v[extra_key] = view_of(A, offset_for(extra_key, 16, N), (4, 4))

    torch.save(variant(mut_wrong), os.path.join(d, "wrong_shape.pth"))
    torch.save(variant(mut_missing), os.path.join(d, "missing_key.pth"))
    torch.save(variant(mut_extra), os.path.join(d, "unexpected_key.pth"))
    raw = open(ckpt, "rb").read()
    with open(os.path.join(d, "truncated.pth"), "wb") as f:
        f.write(raw[:int(len(raw) * 0.6)])

    # ---- checks: sizes, shared storage written once, reload through the experiment's code
    sizes = {}
    for fn in ("checkpoint003.pth", "state_dict.pth", "wrong_shape.pth", "missing_key.pth", "unexpected_key.pth"):
        p = os.path.join(d, fn)
        sizes[fn] = os.path.getsize(p)
        assert sizes[fn] < PTH_LIMIT, (fn, sizes[fn])
        with zipfile.ZipFile(p) as z:
            data = [i for i in z.infolist() if "/data/" in i.filename]
            big = [i.file_size for i in data if i.file_size > 4 * NB]
            assert big == [4 * N], (fn, big)  # A once
            assert sum(i.file_size == 4 * NB for i in data) == 1, fn  # B once
            rest = [i.file_size for i in data if i.file_size not in (4 * N, 4 * NB)]
            assert all(s <= 8 for s in rest), (fn, rest)  # int64 num_batches_tracked / float32 step scalars
    sizes["truncated.pth"] = os.path.getsize(os.path.join(d, "truncated.pth"))

    m2 = new_model()
    o2, s2 = new_optim(m2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epoch = exp.utils.load_checkpoint(ckpt, m2, o2, s2, device="cpu")
    assert epoch == 3 and s2.last_epoch == 1
    with torch.no_grad():
        assert np.array_equal(m2.eval()(torch.from_numpy(x))[0].numpy(), logits)
    m3 = new_model()
    m3.load_state_dict(torch.load(os.path.join(d, "state_dict.pth"), weights_only=True), strict=True)
    with torch.no_grad():
        assert np.array_equal(m3(torch.from_numpy(x))[0].numpy(), logits)
    for fn, what in (("wrong_shape.pth", "size mismatch"), ("missing_key.pth", "Missing key"),
                     ("unexpected_key.pth", "Unexpected key")):
        try:
            new_model().load_state_dict(torch.load(os.path.join(d, fn), weights_only=True), strict=True)
            raise AssertionError(fn)
        except RuntimeError as e:
            assert what in str(e), (fn, str(e)[:200])
    try:
        torch.load(os.path.join(d, "truncated.pth"), weights_only=True)
        raise AssertionError("truncated.pth loaded")
    except RuntimeError:
        pass

    osd = state["optimizer"]
    info = {
        "model_yaml": "model.yaml", "model_yaml_source": None,
        "model_yaml_edits": dict(PTH_MODEL_EDIT, base="configs/models/deeplabv3plus_mobilenetv2_100.yaml"),
        "data_yaml": "data.yaml", "backbone": mc["backbone"], "method": mc["method"],
        "in_channels": 3, "num_classes": nc, "crop_size": PTH_CROP, "batch": 1, "gain": None,
        "max_abs_logit": float(np.abs(logits).max()),
        "logits_shape": list(logits.shape),
        "argmax_class_counts": [int(c) for c in np.bincount(logits.argmax(1).reshape(-1), minlength=nc)],
        "weights": "views into the shared storages A / B (not the formula weights); see README",
        "storage_a": {"numel": N, "dtype": "float32", "values": "PTH_A_SCALE * (2*u_j - 1), u = unit_stream(fnv1a64('zoo.pth.storage_a'))"},
        "storage_b": {"numel": NB, "dtype": "float32", "values": "0.5 + u_j, u = unit_stream(fnv1a64('zoo.pth.storage_b'))"},
        "offsets": "storage A / B offset = fnv1a64(key) % (numel(storage) - numel(tensor) + 1), then the next "
                   "free one (+1, wrapping) in state-dict order so that offsets within a storage are distinct; "
                   "running_var and rank-1 .weight in B",
        "tensor_offsets": offsets,
        "num_batches_tracked": int(sd[[k for k in sd if k.endswith("num_batches_tracked")][0]]),
        "checkpoint": {
            "file": "checkpoint003.pth", "top_keys": list(state), "epoch": 3, "state_dict_prefix": "module.",
            "optimizer": "torch.optim.AdamW(model.get_params_list(lr, multiplier), lr, weight_decay) "
                         "with configs/optims/adamw_lr6e-5.yaml, after one step",
            "optimizer_lr": oc["lr"], "multiplier": oc["multiplier"], "weight_decay": oc["weight_decay"],
            "param_groups": [{k: v for k, v in g_.items() if k != "params"} | {"num_params": len(g_["params"])}
                             for g_ in osd["param_groups"]],
            "optimizer_state_entries": len(osd["state"]),
            "optimizer_state_keys": sorted(next(iter(osd["state"].values()))),
            "optimizer_moments": "exp_avg / exp_avg_sq replaced by views into storage A at offset "
                                 "fnv1a64(param_name + '.exp_avg' | '.exp_avg_sq') % (N - numel + 1) "
                                 "(not made distinct: the largest tensor has both moments at 0) "
                                 "(so exp_avg_sq may be negative: not resumable as a real AdamW state)",
            "step": "float32 scalar tensor 1.0 per parameter (as torch 2.5 stores it)",
            "lr_scheduler": {k: v for k, v in state["lr_scheduler"].items()},
            "train_loss": loss_value,
        },
        "state_dict_file": "state_dict.pth",
        "truncated_file": "truncated.pth", "truncated_bytes": sizes["truncated.pth"],
        "truncated_of_bytes": len(raw),
        "wrong_shape_key": wrong_key, "wrong_shape": wrong_shape, "expected_shape": list(sd[wrong_key].shape),
        "missing_key": missing_key, "unexpected_key": extra_key, "unexpected_shape": [4, 4],
        "sizes": sizes,
        "verified": ["experiment utils.load_checkpoint(checkpoint003.pth) into a fresh Segmentor / AdamW / "
                     "LambdaLR: epoch 3, identical logits",
                     "torch.load(state_dict.pth) strict load: identical logits",
                     "wrong_shape / missing_key / unexpected_key: strict load_state_dict raises",
                     "truncated.pth: torch.load raises",
                     "each file holds storage A and B once (zip data/ records)"],
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print(f"{'pth':42s} {str(list(logits.shape)):20s} max|logit| {info['max_abs_logit']:.4g}  sizes {sizes}",
          flush=True)
    return info


# ------------------------------------------------------------------------------ LiTS
def experiment_accuracy_diff(exp, preds, labels, nc, q, ours):
    """The experiment's AccuracyMetric fed slice by slice (as test_medical does, labels already
    mapped to ignore = num_classes) vs compute_metrics: max |diff| over finite keys."""
    ref = experiment_accuracy(exp.accuracy_metric.AccuracyMetric, preds, labels, nc, nc, q)
    return reference_diff((k, ours.get(k), w) for k, w in ref.items())


def build_lits(exp, tmp, cfgdir, lits_slices, lits_yaml):
    d = os.path.join(tmp, "lits_unet")
    os.makedirs(d)
    shutil.copy(os.path.join(cfgdir, "models", "unet_resnet18d.yaml"), os.path.join(d, "model.yaml"))
    ltext = set_yaml_keys(open(lits_yaml).read(), {"crop_size": "[64, 64]"})
    with open(os.path.join(d, "lits_unet.yaml"), "w") as f:
        f.write(ltext)
    mc = yaml.safe_load(open(os.path.join(d, "model.yaml")))
    dc = yaml.safe_load(ltext)
    assert list(dc) == list(yaml.safe_load(open(lits_yaml)))
    tc = yaml.safe_load(open(os.path.join(cfgdir, "test", "test_iou.yaml")))
    pc_rma = yaml.safe_load(open(os.path.join(cfgdir, "predict", "rankseg_rma.yaml")))
    pc_ba = yaml.safe_load(open(os.path.join(cfgdir, "predict", "rankseg_ba.yaml")))
    model = exp.build(mc, dc)
    sd = formula_state_dict(model, LITS_GAIN)
    model.load_state_dict(sd, strict=True)
    with open(os.path.join(d, "keys.json"), "w") as f:
        json.dump(keys_json(sd), f)
        f.write("\n")

    train, val, val_cases = lits_split(lits_slices, dc["num_cases"], dc["fold"])
    ds = lits_dataset(exp.lits.LiTS, exp.medical_dataset.MedicalDataset, lits_slices, dc, val)
    nc, q = dc["num_classes"], tc["METRIC"]["q"]
    predictors = lits_predictors(pc_rma, pc_ba)
    per = {name: {} for name, _, _ in predictors}
    errors, slices = {}, []
    for i in range(len(ds)):
        image, label, image_file = ds[i]
        case = int(image_file.split("/")[-1].split("_")[0])
        with torch.no_grad():
            # test_medical: no temperature argument
            prob = model.multi_scale_predict(image.unsqueeze(0), torch.device("cpu"), nc, dc["crop_size"],
                                             tc["INF"]["flip"], tc["INF"]["ratios"], tc["INF"]["stride_rate"])
        lab = label.numpy().astype(np.int64)
        fname = os.path.basename(image_file)
        with torch.no_grad():
            lg = model(image.unsqueeze(0))[0]
        margin = (lg[0, 1] - lg[0, 0]).abs()
        slices.append({"file": fname, "case": case, "image_shape": list(image.shape),
                       "label_counts": {str(int(v)): int(c) for v, c in zip(*np.unique(lab, return_counts=True))},
                       "prob1_max": float(prob[0, 1].max()), "prob1_min": float(prob[0, 1].min()),
                       "prob1_sum": float(prob[0, 1].double().sum()),
                       "max_abs_logit": float(lg.abs().max()),
                       "min_abs_logit1_minus_logit0": float(margin.min()),
                       "pixels_abs_logit1_minus_logit0_lt_1e-4": int((margin < 1e-4).sum())})
        add_slice_predictions(per, errors, run_predictors(prob, exp.rankseg_rma, exp.rankseg_ba, predictors),
                              case, fname, lab)
    res = lits_results(predictors, per, errors, nc, q,
                       lambda P, L, m: experiment_accuracy_diff(exp, P, L, nc, q, m))
    expected = {
        "predictors": res,
        "val_cases": val_cases, "num_train_slices": len(train), "num_val_slices": len(val),
        "slices": slices,
        "meta": {
            "model_yaml": "model.yaml (= configs/models/unet_resnet18d.yaml)",
            "data_yaml": "lits_unet.yaml (= tests/fixtures/exp/lits_small.yaml with crop_size [64, 64])",
            "data_dir": "tests/fixtures/exp/lits_slices",
            "weights": f"formula weights with gain {LITS_GAIN} (keys.json; case.json)",
            "gain": LITS_GAIN,
            "test_yaml": "test_iou", "q": q, "stride_rate": tc["INF"]["stride_rate"],
            "batch_size": 1, "temperature": 1.0,
            "predictors": {"argmax": {"METHOD": "argmax"}, "rankseg_rma": pc_rma, "rankseg_ba": pc_ba},
            "metrics": "per case compute_metrics(num_classes=2, ignore_index=2, q=10) "
                       "(scripts/reference_metrics.py), every key averaged over the validation cases",
        },
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, allow_nan=False)
        f.write("\n")
    case_info = {"model_yaml": "model.yaml", "model_yaml_source": "configs/models/unet_resnet18d.yaml",
                 "data_yaml": "lits_unet.yaml", "backbone": mc["backbone"], "method": mc["method"],
                 "in_channels": dc["in_channels"], "num_classes": nc, "crop_size": dc["crop_size"],
                 "batch": 1, "gain": LITS_GAIN,
                 "max_abs_logit": max(s_["max_abs_logit"] for s_ in slices),
                 "data_dir": "tests/fixtures/exp/lits_slices", "test_yaml": "test_iou",
                 "predict_yamls": ["argmax", "rankseg_rma", "rankseg_ba"],
                 "num_keys": len(sd), "num_params": int(sum(v.numel() for v in sd.values()))}
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case_info, f, indent=1)
        f.write("\n")
    for name, e in res.items():
        m = e.get("metrics")
        print(f"lits_unet {name:12s} " + (f"mIoUI={m['mIoUI']:.4f} mDiceD={m['mDiceD']:.4f}" if m
                                          else f"errors={e.get('errors')}"), flush=True)
    return expected


# ------------------------------------------------------------------------------ README
def fmt_keys(rows):
    return [f"  - `{k}` {dt} {shape}" for k, dt, shape in rows]


def write_readme(tmp, infos, keysets, pth_info, lits_expected, vers, exp):
    lines = [
        "# Model-zoo fixtures",
        "",
        "Written by `scripts/make_zoo_fixtures.py` (CPU, one thread, fixed seeds; rerunning gives identical",
        "files). Regenerate with:",
        "",
        "    /tmp/venv/bin/python scripts/make_zoo_fixtures.py --rma-exp /tmp/rma/exp",
        "",
        f"Models are the experiment's own `Segmentor` (ZixunWang/RankSEG-RMA `exp/`, commit {EXP_COMMIT}),",
        "`Segmentor(model_config, data_config, loss_config={main_weight: 1.0, aux_weight: 0.4}, criterion=None)`",
        "in `.eval()`; logits = `model(x)[0]` under `torch.no_grad()`. Nothing is downloaded: `timm.create_model`",
        "always gets `pretrained=False`, the MiT branch's `model_zoo.load_url` returns the encoder's own",
        "state_dict, and an empty `mmcv` module stands in for the one `models/methods/cpt.py` imports.",
        "`mit_b5` is not accepted by the experiment's Backbone (its allow-list reads",
        "`\"mobilevitv2_100\" \"mit_b5\"`, one string): the script checks that it raises NotImplementedError",
        "and then builds that backbone the way the MiT branch does (same modules, same keys).",
        "",
        f"Versions: torch {vers['torch']}, timm {vers['timm']}, numpy {vers['numpy']}, opencv {vers['cv2']},",
        f"scipy {vers['scipy']}, pyyaml {vers['yaml']}, python {vers['python']}.",
        "",
        "## Formula weights",
        "",
        "For every entry of `model.state_dict()` (key `name`, in state-dict order):",
        "",
        "- `seed` = FNV-1a 64 of the UTF-8 bytes of `name` (offset basis 0xcbf29ce484222325, prime",
        "  0x100000001b3; per byte `h = (h ^ b) * prime` mod 2^64).",
        "- element i (0-based, C order), all mod 2^64: `z = seed + (i+1) * 0x9E3779B97F4A7C15;`",
        "  `z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z = z ^ (z >> 31)`;",
        "  `u = float64(z >> 40) / 16777216.0` (in [0, 1)); `r = 2u - 1` (float64).",
        "- value, in float64 then rounded to float32 (first matching rule):",
        "  - name ends with `num_batches_tracked`: int64 scalar 0, shape `()`;",
        "  - ends with `running_var`: `0.5 + u`;",
        "  - ends with `running_mean`: `0.1 * r`;",
        "  - rank 1 and (ends with `.weight` or ends with `gamma`): `1 + 0.2 * r`;",
        "  - other rank 1: `0.1 * r`;",
        "  - rank >= 2: `r * sqrt(3.0 / fan_in) * gain` (evaluated left to right), `fan_in` = product of",
        f"    `shape[1:]`; `gain` = {GAIN} for every zoo case (case.json `gain`), {LITS_GAIN} for lits_unet.",
        "- (no rank-0 float tensors occur.) Loaded with `load_state_dict(sd, strict=True)`.",
        "",
        "Check values: fnv1a64(\"\") = 0xcbf29ce484222325, fnv1a64(\"a\") = 0xaf63dc4c8601ec8c.",
        "",
        "## Files",
        "",
        "- `cases.json`: the case folder names (formula-weight cases, in order).",
        "- `<case>/model.yaml`: a byte copy of configs/models/NAME.yaml (case.json `model_yaml_source`), or that",
        "  file with the top-level values in `model_yaml_edits` replaced (custom cases).",
        "- `<case>/data.yaml`: configs/datas/pascal_voc.yaml with `in_channels`, `num_classes`, `crop_size`",
        "  replaced (every key kept).",
        "- `<case>/input.npy`: float32 (B, in_channels, crop_h, crop_w), seeded standard normal.",
        "- `<case>/logits.npy`: float32 (B, num_classes, crop_h, crop_w) = `model(input)[0]`.",
        "- `<case>/aux.npy` (deeplabv3plus_resnet34d, unet_resnet50d): the aux logits `model(input)[1]`.",
        "- `<case>/keys.json`: `[name, \"F32\"|\"I64\", shape]` per state-dict entry, in state-dict order.",
        "- `<case>/case.json`: model_yaml, data_yaml, backbone, method, max_abs_logit, gain, batch, and more:",
        "  logits_shape, argmax_class_counts, logit_spatial_std (std over pixels, mean over batch and",
        "  classes), min_top2_margin (smallest gap between the two largest logits of a pixel), num_keys,",
        "  num_params, `backbone_facts` (Segmentor",
        "  `backbone.out_channels`, timm `feature_info` channels / reductions / module names, and the real",
        "  shapes [C, H, W] of every entry of `Segmentor.backbone(x)`, entry 0 being the input itself).",
        "- `pth/`: real checkpoint files (see below).",
        "- `lits_unet/`: end-to-end LiTS case (see below): `model.yaml`, `lits_unet.yaml`, `keys.json`,",
        "  `case.json` (gain!), `expected.json`.",
        "",
        "## Cases",
        "",
        "| case | backbone | method | os | crop | B | in | classes | aux | max abs logit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, info in infos.items():
        lines.append(f"| {name} | {info['backbone']} | {info['method']} | {info['output_stride']} | "
                     f"{info['crop_size']} | {info['batch']} | {info['in_channels']} | {info['num_classes']} | "
                     f"{info['aux']} | {info['max_abs_logit']:.4g} |")
    lines += ["", "## Backbone facts (observed)", ""]
    for name, info in infos.items():
        bf = info["backbone_facts"]
        s = f"- {name}: out_channels {bf['segmentor_backbone_out_channels']}"
        if "feature_info_channels" in bf:
            s += f"; feature_info channels {bf['feature_info_channels']}, reductions {bf['feature_info_reduction']}"
            s += f", modules {bf['feature_info_module']}"
        s += f"; features [C,H,W] {bf['features']}"
        lines.append(s)
    lines += [
        "",
        "Notes the Rust side needs:",
        "- `Segmentor.backbone(x)` returns `[x] + features`; for timm backbones `out_channels = [in_channels] +",
        "  feature_info.channels()` (5 features for resnet / efficientnet / mobilenetv2 at reductions",
        "  2, 4, 8, 16, 32 capped at the output stride: with os 8 the last three maps share stride 8; with os 16",
        "  the last two share stride 16). ConvNeXt gives only 4 features (reductions 4, 8, 16, 32; no stride-2",
        "  map), so its feature list has 5 entries, and UPerNet (`out_channels[2:]`, `features[2:]`) uses only",
        "  strides 8, 16, 32 of it (the stride-4 stage output is computed but unused); the aux branch uses",
        "  `features[-2]` (stride 16).",
        "- MiT: `out_channels` is the encoder's fixed tuple `(3, 0, c1, c2, c3, c4)` (3 even for other",
        "  in_channels; the MiT branch ignores `in_channels` and `image_size`); its forward returns",
        "  `[dummy] + 4 stage maps`, the dummy being an empty `(B, 0, H//2, W//2)` tensor, so the Segmentor",
        "  list is `[x, dummy, s4, s8, s16, s32]`; SegFormer / UPerNet take `[2:]`, aux takes `[-2]` (stride 16).",
        "  The encoder has no `head.*` keys (its load_state_dict pops them).",
        "- `aux_conv` / `aux_head` are built (and in the state dict) even when `aux: False`; then the second",
        "  output is None. `Segmentor.get_params_list` would fail its assert for `aux: False` models (aux",
        "  params are not grouped) - only training is affected.",
        "- timm backbones are `timm.create_model(name, in_chans=in_channels, output_stride=os, pretrained=True,",
        "  features_only=True)` (FeatureListNet). Its module names replace the dots of the original top-level",
        "  path by `_`: convnext keys are `backbone.backbone.stem_0.*`, `stem_1.*`, `stages_0.*` .. `stages_3.*`",
        "  (feature_info module names `stages.0` ..); resnet `conv1.*` (deep stem: conv1.0, conv1.1 BN, conv1.3,",
        "  conv1.4 BN, conv1.6), `bn1`, `layer1..4`; efficientnet / mobilenetv2 `conv_stem`, `bn1`, `blocks.<i>.<j>`",
        "  (the modules after the last feature - conv_head, bn2, classifier, convnext's norm_pre / head - are",
        "  dropped). ConvNeXt layer scale is `stages_<s>.blocks.<b>.gamma` (rank 1: formula `1 + 0.2 r`).",
        "- SegHead = `[Dropout2d(p) | Identity (p = 0), Conv2d 1x1, Upsample(size=crop, bilinear, align_corners)]`,",
        "  so the classifier keys are `head.1.*` / `aux_head.1.*` whatever the dropout.",
        "- UNet: 5 decoder blocks, block i upsamples by `size * 2 - int(align_corners)` then concatenates",
        "  feature[-2-i] (none for the last); crops must be multiples of 32.",
        "- DeepLabV3+ `shortcut` uses `features[-4]` (stride 4); ASPP pooling branch is ConvBNReLU on a 1x1 map.",
        "- pspnet_resnet50d at 72x72: the stride-8 map is 9x9, so the PPM bins 2, 3, 6 use",
        "  non-uniform adaptive-average-pool windows.",
        "",
        "## Key prefixes and first / last keys per backbone family",
        "",
        "Top-level prefixes: `backbone.backbone.` (timm FeatureListNet / MiT encoder), `method.`, `head.`,",
        "`aux_conv.`, `aux_head.`.",
        "",
    ]
    for fam, (case, rows) in keysets.items():
        bb = [r for r in rows if r[0].startswith("backbone.")]
        prefixes = sorted({".".join(r[0].split(".")[:3]) for r in bb})
        lines.append(f"- {fam} (case {case}): {len(bb)} backbone keys of {len(rows)}; second-level names:"
                     f" {', '.join('`' + p + '`' for p in prefixes[:40])}{' ...' if len(prefixes) > 40 else ''}")
        lines.append("  first backbone keys:")
        lines += fmt_keys(bb[:6])
        lines.append("  last backbone keys:")
        lines += fmt_keys(bb[-6:])
        lines.append("  last keys:")
        lines += fmt_keys(rows[-4:])
    p = pth_info
    lines += [
        "",
        "## pth/",
        "",
        f"Custom model: deeplabv3plus_mobilenetv2_100.yaml with {PTH_MODEL_EDIT}; data crop {PTH_CROP},",
        f"{PTH_CLASSES} classes. Built with formula weights and the experiment's FocalLoss criterion, then one",
        "real training step (train.py order: zero_grad, forward_loss, backward, AdamW step, scheduler step;",
        "AdamW over `model.get_params_list(lr, multiplier)` with configs/optims/adamw_lr6e-5.yaml, LambdaLR",
        "with main.py's warm-up / poly lambda and configs/schedules/40k_iters.yaml). After the step every",
        "float32 parameter / buffer is re-pointed (`Tensor.set_`) to a contiguous view of one of two shared",
        f"float32 storages, so each file stores them once: storage A ({p['storage_a']['numel']} values =",
        "the largest tensor's numel; `A[j] = s (2u_j - 1)` (s = PTH_A_SCALE in the script), u = the formula's stream with seed",
        f"fnv1a64(\"zoo.pth.storage_a\")) for everything except running_var and the BatchNorm scales, storage B ({p['storage_b']['numel']}",
        f"values = {PTH_B_FACTOR} x its largest tensor, `B[j] = 0.5 + u_j`, seed fnv1a64(\"zoo.pth.storage_b\"))",
        "for running_var and every rank-1 `.weight`. Offset of a tensor = fnv1a64(key) % (storage numel - tensor numel + 1), moved to",
        "the next free offset (+1, wrapping) when an earlier key (state-dict order) has it, so offsets within",
        "a storage are distinct (`case.json` tensor_offsets: [storage, offset]).",
        f"num_batches_tracked = {p['num_batches_tracked']} (after the step), int64 scalars, one storage each.",
        "",
        "- `checkpoint003.pth`: `torch.save({\"epoch\": 3, \"state_dict\": ..., \"optimizer\": optimizer.state_dict(),",
        "  \"lr_scheduler\": scheduler.state_dict()})` - main.py's dict. state_dict keys carry `module.` (taken",
        "  from a plain Module wrapper holding the model as `.module`, as DDP's state_dict gives them; note",
        "  that main.py itself saves `model.state_dict()` of the unwrapped model, since it does",
        "  `DistributedDataParallel(model).module`; utils.load_checkpoint accepts both). The optimizer's",
        "  exp_avg / exp_avg_sq are views into storage A too (offsets fnv1a64(param + \".exp_avg\" |",
        "  \".exp_avg_sq\") % ...; so exp_avg_sq can be negative); `step` is torch's float32 scalar 1.0. The",
        "  scheduler state has `lr_lambdas: [None, ...]` (a lambda is not saved), `last_epoch` 1.",
        "- `state_dict.pth`: `torch.save(model.state_dict())` (no prefix; the OrderedDict's `_metadata` kept).",
        f"- `truncated.pth`: the first 60% ({p['truncated_bytes']} of {p['truncated_of_bytes']} bytes) of",
        "  checkpoint003.pth.",
        f"- `wrong_shape.pth`: state_dict.pth with `{p['wrong_shape_key']}` of shape {p['wrong_shape']}",
        f"  (expected {p['expected_shape']}); `missing_key.pth`: without `{p['missing_key']}`;",
        f"  `unexpected_key.pth`: with an extra `{p['unexpected_key']}` (4, 4).",
        "- `model.yaml`, `data.yaml`, `input.npy` (1, 3, 64, 64), `logits.npy` (computed with the view weights),",
        "  `keys.json`, `case.json` (all of the above, sizes, the optimizer's param_groups).",
        "- Zip records: `<archive>/data.pkl`, `<archive>/byteorder`, `<archive>/data/<n>`, `<archive>/version`,",
        "  `<archive>/.data/serialization_id` (archive = the file name without `.pth`).",
        "- Verified by the script: the experiment's `utils.load_checkpoint` restores checkpoint003.pth into a",
        "  fresh model / optimizer / scheduler with identical logits; state_dict.pth strict-loads with identical",
        "  logits; the three mismatching files make strict load_state_dict raise; truncated.pth fails torch.load.",
        "",
        "## lits_unet/",
        "",
        f"unet_resnet18d (shipped yaml, `model.yaml`) with formula weights with **gain {LITS_GAIN}** (`keys.json`,",
        "`case.json`; with gain 1.0 the class-1 probability stays within [0.47, 0.57] on every slice and",
        "rankseg_rma / rankseg_ba select nearly every pixel), data",
        "`lits_unet.yaml` = tests/fixtures/exp/lits_small.yaml with `crop_size: [64, 64]` (so every slice,",
        "40x44 or 28x44, is padded to 64x64 - one forward per slice), on the prepared slices of",
        "tests/fixtures/exp/lits_slices (fold 0 validates cases 0 and 1: "
        f"{lits_expected['num_val_slices']} slices). As test_medical: the",
        "experiment's LiTS __getitem__ (centre Crop with pad -60 / 255, ToTensor, WindowStandardize; labels",
        ">> 1, > 1 -> 2), `Segmentor.multi_scale_predict` with test_iou.yaml's INF (batch 1, no temperature),",
        "argmax / rankseg_rma.py (configs/predict/rankseg_rma.yaml) / rankseg_ba.py (rankseg_ba.yaml); per",
        "case `compute_metrics(num_classes=2, ignore_index=2, q=10)` (scripts/reference_metrics.py) and every",
        "key averaged over the validation cases. `expected.json` `predictors.<name>` = {metrics, per_case} in",
        "the layout of tests/fixtures/exp/expected.json `lits_small.predictors`; `slices` has per-slice",
        "probability stats (and how many pixels have |logit1 - logit0| < 1e-4: argmax there is fragile).",
        "",
        f"The Rust test writes the formula weights (keys.json, gain {LITS_GAIN}) to `OUT/checkpoint.safetensors`",
        "and runs",
        "",
        "    rankseg exp --test-only --data_dir tests/fixtures/exp/lits_slices --output_dir OUT \\",
        "      --model_yaml tests/fixtures/zoo/lits_unet/model.yaml \\",
        "      --data_yaml tests/fixtures/zoo/lits_unet/lits_unet.yaml \\",
        "      --model_checkpoint OUT/checkpoint.safetensors \\",
        "      --predict_yaml argmax|rankseg_rma|rankseg_ba --test_yaml test_iou",
        "",
        "(`--data_dir` is the folder holding `lits/train/<case>_<slice>.npz`, as for the exp fixture's",
        "`lits_small` run.)",
        "",
        "Metrics:",
        "",
    ]
    for name, e in lits_expected["predictors"].items():
        m = e["metrics"]
        lines.append(f"- {name}: mIoUI {m['mIoUI']:.4f}, mDiceI {m['mDiceI']:.4f}, mIoUD {m['mIoUD']:.4f}, "
                     f"mDiceD {m['mDiceD']:.4f}")
    files = file_sizes(tmp)
    total = sum(s for _, s in files)
    lines += ["", "## Sizes", "", f"Total (without README.md): {total} B", ""]
    lines += [f"- `{p_}`: {s} B" for p_, s in files]
    lines.append("")
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write("\n".join(lines))


# ------------------------------------------------------------------------------ main
def main(argv=None):
    ap = fixture_parser(__doc__, DEFAULT_OUT)
    ap.add_argument("--lits-slices", default=DEFAULT_LITS, help="prepared LiTS slices (tests/fixtures/exp)")
    ap.add_argument("--lits-yaml", default=DEFAULT_LITS_YAML)
    ap.add_argument("--only", nargs="*", help="only build these cases and print their logits range "
                    "(a quick look: nothing is written)")
    args = ap.parse_args(argv)
    rma = os.path.abspath(args.rma_exp)
    out = os.path.abspath(args.out)

    deterministic_cpu()
    check_formula()

    exp = Exp(rma)
    cfgdir = os.path.join(rma, "configs")
    voc_text = open(os.path.join(cfgdir, "datas", "pascal_voc.yaml")).read()
    vers = {"python": sys.version.split()[0], "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "cv2": cv2.__version__, "scipy": scipy.__version__, "yaml": yaml.__version__}

    with build_dir(out, "zoo") as tmp:
        infos, keysets, out_of_range = {}, {}, []
        for i, case in enumerate(CASES):
            if args.only and case["name"] not in args.only:
                continue
            info, sd = run_case(exp, tmp, case, i, voc_text, cfgdir)
            infos[case["name"]] = info
            for fam, example in KEY_EXAMPLES.items():
                if example == case["name"]:
                    keysets[fam] = (case["name"], keys_json(sd))
            if not (LOGIT_TINY <= info["max_abs_logit"] <= LOGIT_HUGE):
                out_of_range.append(case["name"])
        if args.only:
            shutil.rmtree(tmp)
            return 0
        with open(os.path.join(tmp, "cases.json"), "w") as f:
            json.dump(list(infos), f, indent=1)
            f.write("\n")
        pth_info = build_pth(exp, tmp, cfgdir, voc_text)
        lits_expected = build_lits(exp, tmp, cfgdir, os.path.abspath(args.lits_slices), os.path.abspath(args.lits_yaml))
        write_readme(tmp, infos, keysets, pth_info, lits_expected, vers, exp)
        total = swap_in(tmp, out, "zoo", SIZE_LIMIT)
    print(f"wrote {out} ({total} bytes)")
    if out_of_range:
        print(f"WARNING: max |logit| outside [{LOGIT_TINY}, {LOGIT_HUGE}] for {out_of_range}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
