#!/usr/bin/env python3
"""Write the training parity fixtures (tests/fixtures/train_exp/): what the RankSEG-RMA
experiment's own main.py + train.py produce when they train (no --test-only), for
`rankseg exp` to reproduce.

    /tmp/venv/bin/python scripts/make_train_fixtures.py [--rma-exp /tmp/rma/exp]
        [--jdt-losses /tmp/jdtlosses] [--out tests/fixtures/train_exp] [--models mit ...]
        (--models: train only these models, keeping the others' files from --out; default all)
    /tmp/venv/bin/python scripts/make_train_fixtures.py --write-init /tmp/init.pth [--optim sgd_lr1e-2]
        [--model mit]
        (only regenerate the initial checkpoint from the committed yamls; see write_init)

Setup (all of it in the fixture folder, small):
* data/: a PASCAL-VOC layout (VOCdevkit/VOC2012) read by the experiment's own PASCALVOC
  dataset: 4 train images listed in ImageSets/Segmentation/train_aug.txt as
  `/JPEGImages/tK.png /SegmentationClassAug/tK.png` (lossless 8-bit RGB PNG, 64 x 64), 2 val
  images in val.txt (`JPEGImages/<id>.jpg`, a path the experiment hard-codes, so these are
  JPEGs; labels `SegmentationClassAug/<id>.png`). Train images and labels are exactly
  left-right symmetric, so with scale_min = scale_max = 1 and crop_size = the image size every
  train augmentation (RandScale, flip, pad, random crop) is the identity: the script checks
  this with the experiment's own dataset __getitem__. Labels: classes 0..2 and some 255.
* data.yaml: configs/datas/pascal_voc.yaml with num_classes 3, scale 1..1, crop [64, 64]
  (image_suffix stays ".jpg": the train list names the .png files directly, and the val
  list's hard-coded .jpg images then map to .png labels as in the real dataset).
* model.yaml: deeplabv3plus / resnet18d, output_stride 8, narrow method widths, dropout 0.
* mit/model.yaml (MODELS: each model's model.yaml, keys.txt and expected_* in its subdir;
  data, data.yaml, schedule.yaml and the optim yamls are shared): segformer / mit_b0,
  output_stride 32, out_channels 32, aux_out_channels 16, dropout 0, and drop_path_rate 0, a
  key of rankseg's model yaml the experiment's Segmentor ignores (its mit_b0 builds with
  stochastic depth 0.1): Exp wraps Segmentor.__init__ to call
  model.backbone.backbone.reset_drop_path(rate), so neither side drops paths. MiT's
  model_zoo.load_url (backbone.py) returns a freshly built encoder's state dict instead of
  downloading; the formula overwrites it.
* schedule.yaml: by iterations, train_iters 4, batch 4 (one batch per epoch, drop_last), so
  main.py runs train_epochs = 4 // 1 + 1 = 5 epochs of one step; adamw_lr6e-4.yaml and
  sgd_lr1e-2.yaml are the shipped optim yamls (copied); test_iou / argmax and the loss yamls
  are the shipped ones.
* Initial weights: the formula of `formula_tensor` (README.md "Formula"), every state-dict
  entry computed from its name and shape only (BatchNorm, LayerNorm, conv and Linear
  entries), saved by write_init as main.py's checkpoint (epoch 0, fresh optimizer and
  scheduler states; one per model and optim yaml) in a temporary folder: ~45 MB
  (deeplabv3plus) / ~14 MB (mit), not kept.

Runs (CPU, one thread, torch.manual_seed(0)): main.py's `__main__` block itself (lifted out
of main.py with `ast` and executed in main.py's namespace), with `--model_checkpoint init.pth`.
Patched in the process, not in the files: main.py / train.py see a `torch` whose
`torch.device(...)` is the CPU and whose torch.cuda device / memory-statistics calls are
no-ops; timm.create_model gets pretrained=False; PASCALVOC.get_image_list runs without its
dataset-size asserts (lifted with `ast`, the asserts dropped). Recorded per optimizer step
(a global optimizer step pre-hook and a wrapped Segmentor.forward_loss): curr_iter, epoch,
param group 0's lr as that step uses it, loss.item(). The final weights are those of the
last checkpoint main.py saves (checkpoint005.pth).

Losses: `ce` as the experiment computes it. `dice_ic_present_all`: the experiment's
get_criterion ignores the JDT keys (FocalLoss only: it would train exactly as `ce`), while
rankseg follows JDTLosses (SPEC.md "Training"); for that loss the script passes main.py
JDTLosses' get_criterion (HARD labels) and makes forward_loss JDTLosses'
Segmentor.forward_loss_hard_label, summed as its train_hard_label.py does (imported from
--jdt-losses, a checkout of zifuwanggg/JDTLosses).

Cases (MODELS' cases): deeplabv3plus trains both losses with AdamW (adamw_lr6e-4, the
paper's) and with SGD (sgd_lr1e-2: AdamW's sign-like steps make these runs chaotic, SGD's
stay at rounding level, README.md "Noise"); mit trains `ce` with both (mit/expected_ce,
mit/expected_ce_sgd; its SGD run drifts from float64 more, README.md "MiT case"). Each is
run again in float64 (the Segmentor in double, inputs cast in forward) and
in float32 with another batch order (torch seed 1): the differences are torch's own noise
(expected_<case>.json). Nothing is downloaded; rerunning gives identical files. The output
folder is built in a temporary directory next to it and then swapped in.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep scripts/ and the (read-only) experiment checkout clean

import ast
import contextlib
import json
import logging
import math
import os
import pickle
import posixpath
import random
import shutil
import tempfile
import types
import typing
import warnings

import cv2
import numpy as np
import timm
import torch
import yaml
from safetensors.torch import save_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "train_exp")
REL_OUT = "tests/fixtures/train_exp"
SIZE_LIMIT = 2_000_000  # whole folder (bytes)

sys.path.insert(0, HERE)
from fixtureutil import build_dir, deterministic_cpu, file_sizes, fixture_parser, swap_in  # noqa: E402
from make_loss_fixtures import load_tree, stub_mmcv  # noqa: E402

# ------------------------------------------------------------------------------ fixture spec
NUM_CLASSES = 3
SIZE = 64
TRAIN_IDS = ["t0", "t1", "t2", "t3"]
VAL_IMAGES = [("v0", (SIZE, SIZE)), ("v1", (48, 56))]  # v1 is padded to the crop at test time
LOSSES = ["ce", "dice_ic_present_all"]
OPTIMS = ["adamw_lr6e-4", "sgd_lr1e-2"]  # shipped optim yamls (copied into the fixture)
FULL_LIMIT = 4096     # state-dict entries up to this many elements are stored whole
SAMPLE_POINTS = 512   # bigger ones: every (numel // 512)-th element, and their float64 sum
# names of the fixture's own yamls (under configs/<kind>/ of the run's working folder)
NAME = "train_exp"

SCHEDULE_YAML = {
    "train_iters": 4, "train_epochs": -1, "log_iters": 1, "save_epochs": 1,
    "warmup_ratio": 0.3, "num_workers": 0, "batch_size": 4, "by_epoch": False,
}
DATA_OVERRIDES = {"num_classes": NUM_CLASSES, "scale_min": 1.0, "scale_max": 1.0, "crop_size": [SIZE, SIZE]}
# the yamls all models share (in the fixture folder itself); each model's model.yaml is in its subdir
FIXTURE_YAMLS = {"datas": "data.yaml", "schedules": "schedule.yaml"}


class FixtureModel(typing.NamedTuple):
    """One model of the fixtures: `subdir` of the fixture folder ("" = the folder itself) holds
    its model.yaml, keys.txt and expected_<case>.*; `yaml_name` names its model yaml under
    configs/models/ of the run's working folder; `cases` are (case, loss yaml, optim yaml)."""
    key: str
    subdir: str
    yaml_name: str
    model_yaml: dict
    cases: list

    def files(self):
        """Its files, relative to the fixture folder."""
        names = ["model.yaml", "keys.txt"] + [f"expected_{c}.{e}" for c, _, _ in self.cases
                                              for e in ("safetensors", "json")]
        return [posixpath.join(self.subdir, n) for n in names]


# (case, loss yaml, optim yaml): AdamW as the paper trains; SGD because AdamW's sign-like first
# steps make these runs chaotic (README.md "Noise") while SGD's are not
MODELS = [
    FixtureModel("deeplabv3plus", "", NAME, {
        "backbone": "resnet18d", "method": "deeplabv3plus", "output_stride": 8,
        "out_channels": 16, "aux_out_channels": 8, "shortcut_channels": 4, "dropout": 0,
        "atrous_rates": [2, 4, 6], "align_corners": False, "aux": True,
    }, [("ce", "ce", OPTIMS[0]), ("dice_ic_present_all", "dice_ic_present_all", OPTIMS[0]),
        ("ce_sgd", "ce", OPTIMS[1]), ("dice_ic_present_all_sgd", "dice_ic_present_all", OPTIMS[1])]),
    # drop_path_rate is a key of rankseg's model yaml (MiT's stochastic depth); the experiment's
    # Segmentor ignores it and builds mit_b0 with 0.1: Exp makes the Segmentor honour it
    FixtureModel("mit", "mit", f"{NAME}_mit", {
        "backbone": "mit_b0", "method": "segformer", "output_stride": 32,
        "out_channels": 32, "aux_out_channels": 16, "dropout": 0, "align_corners": False,
        "aux": True, "drop_path_rate": 0,
    }, [("ce", "ce", OPTIMS[0]), ("ce_sgd", "ce", OPTIMS[1])]),
]
MODEL_KEYS = [m.key for m in MODELS]


# ------------------------------------------------------------------------------ formula weights
def formula_tensor(name, shape):
    """The initial value of state-dict entry `name` of shape `shape`, from those two only.

    With i the flat (C-order) element index, L = len(name) and, in float64,
        t_i = 0.7 * i + 0.1 * L          (each product rounded, then the sum)
        s_i = sin(t_i)                   (libm sin; Rust's f64::sin)
    the float64 value, then rounded to float32 (round to nearest even), is
        *.num_batches_tracked      0 (int64)
        *.running_mean             0.1 * s_i
        *.running_var              1.0 + 0.5 * |s_i|
        *.bias                     0.1 * s_i            (BatchNorm, LayerNorm, conv and Linear alike)
        *.weight, 1-D              1.0 + 0.1 * s_i      (BatchNorm, LayerNorm)
        *.weight, >= 2-D           s_i / sqrt(fan_in),  fan_in = prod(shape[1:])  (conv, Linear)
    Any other name is an error."""
    if name.endswith(".num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    n = math.prod(shape)
    t = 0.7 * np.arange(n, dtype=np.float64) + 0.1 * len(name)
    s = np.fromiter(map(math.sin, t.tolist()), dtype=np.float64, count=n)
    if name.endswith(".running_mean"):
        v = 0.1 * s
    elif name.endswith(".running_var"):
        v = 1.0 + 0.5 * np.abs(s)
    elif name.endswith(".bias"):
        v = 0.1 * s
    elif name.endswith(".weight") and len(shape) == 1:
        v = 1.0 + 0.1 * s
    elif name.endswith(".weight"):
        v = s / math.sqrt(math.prod(shape[1:]))
    else:
        raise ValueError(f"no formula for state-dict entry {name!r}")
    return torch.from_numpy(v.reshape(shape)).to(torch.float32)


def formula_state_dict(model):
    return {k: formula_tensor(k, tuple(v.shape)) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------ experiment
class CpuTorch(types.ModuleType):
    """`torch` as main.py and train.py see it during a run: torch.device(...) is the CPU;
    torch.cuda.device / reset_peak_memory_stats / max_memory_allocated do nothing (0 bytes)."""

    def __init__(self):
        super().__init__("torch")
        self.device = lambda *_a, **_k: torch.device("cpu")
        self.cuda = types.SimpleNamespace(device=lambda *_a: contextlib.nullcontext(),
                                          reset_peak_memory_stats=lambda *_a: None,
                                          max_memory_allocated=lambda *_a: 0)

    def __getattr__(self, name):
        return getattr(torch, name)


def lift_function(module, cls_name, fn_name, drop_asserts):
    """`cls_name.fn_name` compiled from module's source (its own globals), the top-level
    assert statements of its body removed when drop_asserts."""
    path = module.__file__
    tree = ast.parse(open(path).read(), path)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == fn_name)
    if drop_asserts:
        fn.body = [s for s in fn.body if not isinstance(s, ast.Assert)]
    ns = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), module.__dict__, ns)
    return ns[fn_name]


class Exp:
    """The experiment's modules (main, train, models.segmentor, datas, losses) imported from
    `rma`, JDTLosses' get_criterion and Segmentor from `jdt`; nothing downloads (timm models
    get pretrained=False, MiT's model_zoo.load_url a freshly built encoder's state dict). The
    Segmentor honours our model yaml's `drop_path_rate` (MiT's stochastic depth, a key the
    experiment ignores): once built, it calls model.backbone.backbone.reset_drop_path(rate)."""

    def __init__(self, rma, jdt):
        stub_mmcv()  # models/methods/cpt.py imports mmcv (only its "cpt" method uses it)
        real_create = timm.create_model

        def create_model(name, *args, **kwargs):
            kwargs["pretrained"] = False
            return real_create(name, *args, **kwargs)

        timm.create_model = create_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # JDTLosses first: load_tree forgets its `losses` / `models` packages afterwards
            self.jdt_criterion, self.jdt_segmentor = load_tree(jdt, ["losses.get_criterion", "models.segmentor"])
            sys.path.insert(0, rma)
            import main  # noqa: E402  (the experiment's)
            import train  # noqa: E402
            import models.segmentor as segmentor  # noqa: E402
            import datas.dataloader as dataloader  # noqa: E402
            import datas.datasets.pascal_voc as pascal_voc  # noqa: E402
            import datas.datasets.transform as transform  # noqa: E402
            import models.backbones.backbone as backbone  # noqa: E402
        self.main, self.train, self.segmentor = main, train, segmentor
        self.dataloader, self.transform = dataloader, transform
        for m in (main, train, segmentor, dataloader, pascal_voc, backbone, sys.modules["test"], sys.modules["utils"],
                  sys.modules["losses.get_criterion"]):
            assert os.path.abspath(m.__file__).startswith(os.path.abspath(rma)), m.__file__
        for m in (self.jdt_criterion, self.jdt_segmentor):
            assert os.path.abspath(m.__file__).startswith(os.path.abspath(jdt)), m.__file__
        # the 10582 / 1449 image-count asserts of the real VOC
        pascal_voc.PASCALVOC.get_image_list = lift_function(pascal_voc, "PASCALVOC", "get_image_list", True)
        backbone.model_zoo = types.SimpleNamespace(load_url=mit_load_url(backbone.mix_transformer_encoders))
        segmentor.Segmentor.__init__ = honour_drop_path_rate(segmentor.Segmentor.__init__)
        main_path = main.__file__
        tree = ast.parse(open(main_path).read(), main_path)
        block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "__name__ == '__main__'")
        self.main_block = compile(ast.Module(body=block.body, type_ignores=[]), main_path, "exec")

    def run_main_block(self, cfg_root, patches):
        """Execute main.py's `__main__` block in main.py's namespace, with cfg_root as the
        working folder (get_args reads configs/<kind>/<name>.yaml there), the (object,
        attribute, value) patches in place, warnings and its stdout logging silenced. Returns
        the block's `args`. Its add_handler calls logging.basicConfig, which works once: the
        root logger's handlers are removed before and after."""
        def drop_handlers():
            for h in logging.root.handlers[:]:
                logging.root.removeHandler(h)
                h.close()

        cwd = os.getcwd()
        drop_handlers()
        try:
            os.chdir(cfg_root)
            with patched(*patches), warnings.catch_warnings(), open(os.devnull, "w") as null, \
                    contextlib.redirect_stdout(null):
                warnings.simplefilter("ignore")
                exec(self.main_block, self.main.__dict__)
        finally:
            drop_handlers()
            os.chdir(cwd)
        return self.main.__dict__.pop("args")

    def segmentor64(self):
        """The Segmentor in float64: parameters and buffers double, inputs cast in forward."""
        class Segmentor64(self.segmentor.Segmentor):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.double()

            def forward(self, x):
                return super().forward(x.double())

        return Segmentor64

    def jdt_get_criterion(self, args):
        """JDTLosses' (criterion_ce, criterion_kl, criterion_jdt) for hard labels; a tuple, so
        the Segmentor keeps it as a plain attribute (no state-dict entries)."""
        ns = types.SimpleNamespace(label_config={"HARD": True}, loss_config=args.loss_config,
                                   data_config=args.data_config)
        return self.jdt_criterion.get_criterion(ns)

    def jdt_forward_loss(self, loss_config):
        """Segmentor.forward_loss as JDTLosses trains hard labels: its forward_loss_hard_label
        on the experiment's model, loss = loss_ce + loss_jdt (train_hard_label.py)."""
        hard_label = self.jdt_segmentor.Segmentor.forward_loss_hard_label

        def forward_loss(model, image, label, keep_mask=None):
            criterion_ce, _, criterion_jdt = model.criterion
            stand_in = types.SimpleNamespace(
                forward=model.forward, aux=model.aux, main_weight=model.main_weight, aux_weight=model.aux_weight,
                ce_weight=loss_config["ce_weight"], jdt_weight=loss_config["jdt_weight"],
                criterion_ce=criterion_ce, criterion_jdt=criterion_jdt)
            loss_ce, loss_jdt = hard_label(stand_in, image, label, keep_mask)
            return loss_ce + loss_jdt

        return forward_loss


def mit_load_url(encoders):
    """model_zoo.load_url for backbone.py's MiT (its only caller): instead of downloading the
    ImageNet weights, the state dict of a freshly built encoder of the url's name (built in
    torch.random.fork_rng, so the run's random stream is as if nothing had loaded); the formula
    weights overwrite it."""
    def load_url(url):
        (name,) = [n for n, e in encoders.items() if e["pretrained_settings"]["imagenet"]["url"] == url]
        with torch.random.fork_rng(devices=[]):
            return encoders[name]["encoder"](**encoders[name]["params"]).state_dict()
    return load_url


def honour_drop_path_rate(init):
    """Segmentor.__init__ followed, when the model yaml has `drop_path_rate` (MiT backbones),
    by model.backbone.backbone.reset_drop_path(rate): the experiment's mit_b<i> build with
    drop_path_rate 0.1 and its Segmentor ignores the key."""
    def wrapped(model, model_config, *args, **kwargs):
        init(model, model_config, *args, **kwargs)
        if "drop_path_rate" in model_config:
            rate = model_config["drop_path_rate"]
            model.backbone.backbone.reset_drop_path(rate)
            probs = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
            assert probs and max(probs) == rate, probs
    return wrapped


@contextlib.contextmanager
def patched(*triples):
    """Set (object, attribute, value) for the block, restoring the old values after."""
    old = [(o, a, getattr(o, a)) for o, a, _ in triples]
    for o, a, v in triples:
        setattr(o, a, v)
    try:
        yield
    finally:
        for o, a, v in reversed(old):
            setattr(o, a, v)


def read_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def write_yaml(path, data):
    """A flat yaml as the shipped configs are written: one `key: value` line each (JSON
    scalars and lists are YAML)."""
    with open(path, "w") as f:
        f.writelines(f"{k}: {json.dumps(v)}\n" for k, v in data.items())
    assert read_yaml(path) == data, path


def lr_lambda(iteration, optim_config, schedule_config):
    """main.py's lr_lambda (its closure is not reachable from outside main())."""
    lr, start_lr, power = optim_config["lr"], optim_config["start_lr"], optim_config["power"]
    train_iters = schedule_config["train_iters"]
    warmup_iters = schedule_config["warmup_ratio"] * train_iters
    if iteration < warmup_iters:
        return max(start_lr / lr, iteration / warmup_iters)
    return (1. - (iteration - warmup_iters) / (train_iters - warmup_iters)) ** power


def write_init(path_pth, optim=OPTIMS[0], fixture_dir=DEFAULT_OUT, rma_exp="/tmp/rma/exp",
               jdt_losses="/tmp/jdtlosses", exp=None, model=MODELS[0]):
    """Save the fixtures' initial checkpoint of `model` (a FixtureModel) to `path_pth` as
    main.py saves checkpoints: {"epoch": 0, "state_dict": formula weights, "optimizer": a fresh
    optimizer's state_dict(), "lr_scheduler": a fresh LambdaLR's}, the model, parameter groups,
    optimizer and scheduler built as main.py builds them from fixture_dir's data / schedule
    yamls and `<optim>.yaml` and the model's <subdir>/model.yaml (the loss yaml changes none of
    it; ce's is used). main.py loads the optimizer state into the optimizer its optim yaml
    builds, so each optim yaml needs its own file. Returns the state dict."""
    exp = exp or Exp(rma_exp, jdt_losses)
    cfg = {kind: read_yaml(os.path.join(fixture_dir, f)) for kind, f in FIXTURE_YAMLS.items()}
    cfg["models"] = read_yaml(os.path.join(fixture_dir, model.subdir, "model.yaml"))
    cfg["optims"] = read_yaml(os.path.join(fixture_dir, f"{optim}.yaml"))
    loss_config = read_yaml(os.path.join(os.path.dirname(exp.main.__file__), "configs", "losses", "ce.yaml"))
    args = types.SimpleNamespace(data_config=cfg["datas"], loss_config=loss_config)
    model = exp.segmentor.Segmentor(cfg["models"], cfg["datas"], loss_config, exp.main.get_criterion(args))
    state_dict = formula_state_dict(model)
    model.load_state_dict(state_dict, strict=True)
    oc = cfg["optims"]
    params_list = model.get_params_list(oc["lr"], oc["multiplier"])
    if oc["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(params_list, lr=oc["lr"], weight_decay=oc["weight_decay"], momentum=oc["momentum"])
    else:
        assert oc["optimizer"] == "adamw", oc
        optimizer = torch.optim.AdamW(params_list, lr=oc["lr"], weight_decay=oc["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda=lambda i: lr_lambda(i, oc, cfg["schedules"]))
    torch.save({"epoch": 0, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict()}, path_pth)
    return state_dict


# ------------------------------------------------------------------------------ data
def symmetric(a):
    """a (H, W, ...) with its right half replaced by the mirror of its left half."""
    w = a.shape[1]
    a = a.copy()
    a[:, w - w // 2:] = a[:, : w // 2][:, ::-1]
    return a


def make_train_pair(rng):
    """A left-right symmetric (image uint8 (H, W, 3) RGB, label uint8 (H, W)): a disc of class
    1 on the axis, two mirrored boxes of class 2, background 0, a few mirrored 255 pixels; the
    image is a per-class colour plus a vertical gradient plus noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    label = np.zeros((SIZE, SIZE), np.uint8)
    cy, r = rng.uniform(20, 44), rng.uniform(8, 14)
    label[(yy - cy) ** 2 + (xx - (SIZE - 1) / 2) ** 2 < r ** 2] = 1
    y0, x0 = int(rng.integers(4, 40)), int(rng.integers(2, 14))
    label[y0: y0 + int(rng.integers(8, 20)), x0: x0 + int(rng.integers(5, 12))] = 2
    colours = rng.uniform(30, 225, size=(NUM_CLASSES, 3))
    image = colours[label] + (yy[..., None] - SIZE / 2) * rng.uniform(-1, 1, size=3) + rng.normal(0, 12, (SIZE, SIZE, 3))
    label = symmetric(label)
    for _ in range(4):
        label[int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE // 2))] = 255
    label = symmetric(label)
    image = symmetric(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    return image, label


def make_val_pair(rng, h, w):
    """An (image RGB, label) pair without symmetry: class bands plus noise, some 255."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    label = ((xx + 0.7 * yy + rng.uniform(0, 20)) // 18 % NUM_CLASSES).astype(np.uint8)
    label[rng.random((h, w)) < 0.02] = 255
    colours = rng.uniform(30, 225, size=(NUM_CLASSES + 1, 3))
    image = colours[np.minimum(label, NUM_CLASSES)] + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def write_dataset(data_dir):
    """data_dir/VOCdevkit/VOC2012/...; returns {id: label array} of the train images."""
    root = os.path.join(data_dir, "VOCdevkit", "VOC2012")
    for d in ("JPEGImages", "SegmentationClassAug", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    rng = np.random.default_rng(0)
    for i in TRAIN_IDS:
        image, label = make_train_pair(rng)
        assert cv2.imwrite(os.path.join(root, "JPEGImages", f"{i}.png"), image[..., ::-1])
        assert cv2.imwrite(os.path.join(root, "SegmentationClassAug", f"{i}.png"), label)
    for i, (h, w) in VAL_IMAGES:
        image, label = make_val_pair(rng, h, w)
        assert cv2.imwrite(os.path.join(root, "JPEGImages", f"{i}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert cv2.imwrite(os.path.join(root, "SegmentationClassAug", f"{i}.png"), label)
    with open(os.path.join(root, "ImageSets", "Segmentation", "train_aug.txt"), "w") as f:
        f.writelines(f"/JPEGImages/{i}.png /SegmentationClassAug/{i}.png\n" for i in TRAIN_IDS)
    with open(os.path.join(root, "ImageSets", "Segmentation", "val.txt"), "w") as f:
        f.writelines(f"{i}\n" for i, _ in VAL_IMAGES)


def check_identity_augmentation(exp, data_dir, data_config):
    """Every train item, drawn 8 times under different `random` seeds by the experiment's own
    PASCALVOC.__getitem__ (RandScale, flip, pad, random crop, ToTensor, Normalize), equals the
    raw image / label put through ToTensor + Normalize alone; the raw pairs are mirror images
    of themselves. Returns the number of items checked."""
    ds = exp.dataloader.get_dataset(True, data_dir, data_config)
    assert len(ds) == len(TRAIN_IDS)
    t = exp.transform
    plain = t.Compose([t.ToTensor(), t.Normalize(mean=[123.68, 116.28, 103.53], std=[58.40, 57.12, 57.38])])
    for index, image_file in enumerate(ds.image_list):
        rgb = cv2.cvtColor(cv2.imread(image_file, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        label = cv2.imread(ds.get_label_file(image_file), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(rgb, rgb[:, ::-1]) and np.array_equal(label, label[:, ::-1]), image_file
        assert (label == 255).any() and set(np.unique(label)) <= set(range(NUM_CLASSES)) | {255}
        want_image, want_label = plain(np.float32(rgb), label.copy())
        want_label[want_label == 255] = NUM_CLASSES
        for seed in range(8):
            random.seed(seed)
            image, lab, _ = ds[index]
            assert torch.equal(image, want_image) and torch.equal(lab, want_label), (image_file, seed)
    return len(ds)


# ------------------------------------------------------------------------------ one training run
class Recorder:
    """Per optimizer step: curr_iter, epoch, param group 0's lr (read before the step), the
    loss; per epoch: what the epoch changed (weights, BatchNorm buffers, optimizer state)."""

    def __init__(self):
        self.steps, self.losses, self.epochs = [], [], []
        self.args = self.epoch = self.prev = None

    def pre_step(self, optimizer, _args, _kwargs):
        self.steps.append({"iter": self.args.schedule_config["curr_iter"], "epoch": self.epoch,
                           "lr": optimizer.param_groups[0]["lr"]})

    def wrap_forward_loss(self, forward_loss):
        def wrapped(model, image, label, keep_mask=None):
            loss = forward_loss(model, image, label, keep_mask)
            self.losses.append(loss.item())
            return loss
        return wrapped

    def wrap_train(self, train):
        def wrapped(model, data_loader, optimizer, scheduler, device, epoch, args):
            self.args, self.epoch = args, epoch
            if self.prev is None:
                self.snapshot(model, optimizer)
            train(model, data_loader, optimizer, scheduler, device, epoch, args)
            self.epoch_changes(model, optimizer, epoch)
        return wrapped

    def snapshot(self, model, optimizer):
        self.prev = ({k: v.detach().clone() for k, v in model.state_dict().items()},
                     {(i, k): v.detach().clone() for i, s in enumerate(optimizer.state.values())
                      for k, v in s.items() if k != "step"})

    def epoch_changes(self, model, optimizer, epoch):
        params = {n for n, _ in model.named_parameters()}
        psd, pstate = self.prev
        self.snapshot(model, optimizer)
        sd, state = self.prev
        diff = lambda a, b, keys: max(float((a[k].double() - b[k].double()).abs().max()) for k in keys)
        first = next(iter(optimizer.state.values()))
        self.epochs.append({
            "epoch": epoch,
            "weights_max_abs_change": diff(sd, psd, params),
            "bn_running_stats_max_abs_change": diff(
                sd, psd, [k for k in sd if k.endswith(("running_mean", "running_var"))]),
            "num_batches_tracked": int(next(v for k, v in sd.items() if k.endswith(".num_batches_tracked"))),
            "optimizer_step": float(first["step"]) if "step" in first else None,
            "optimizer_state_max_abs_change (" + "/".join(sorted({k for _, k in state})) + ")":
                diff(state, pstate, state) if pstate else None,
        })


def run_main(exp, cfg_root, data_dir, init_pth, model, loss, optim, out_dir, float64=False, seed=0):
    """main.py's `__main__` block (its get_args on a command line naming the fixture yamls,
    `model`'s model yaml, executed with cfg_root as the working folder) after seeding with
    `seed` (the batch order); returns the Recorder, the last checkpoint main.py saved, its
    args and its test metrics."""
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    rec = Recorder()
    loss_config = read_yaml(os.path.join(cfg_root, "configs", "losses", f"{loss}.yaml"))
    seg = exp.segmentor.Segmentor
    forward_loss = exp.jdt_forward_loss(loss_config) if "jdt_weight" in loss_config else seg.forward_loss
    patches = [(exp.main, "torch", CpuTorch()), (exp.train, "torch", CpuTorch()),
               (exp.main, "train", rec.wrap_train(exp.train.train)),
               (seg, "forward_loss", rec.wrap_forward_loss(forward_loss)),
               (sys, "argv", ["main.py", "--model_checkpoint", init_pth, "--data_dir", data_dir,
                              "--output_dir", out_dir, "--model_yaml", model.yaml_name, "--data_yaml", NAME,
                              "--loss_yaml", loss, "--schedule_yaml", NAME, "--optim_yaml", optim,
                              "--test_yaml", "test_iou", "--predict_yaml", "argmax"])]
    if "jdt_weight" in loss_config:
        patches.append((exp.main, "get_criterion", exp.jdt_get_criterion))
    if float64:
        patches.append((exp.main, "Segmentor", exp.segmentor64()))
    hook = register_optimizer_step_pre_hook(rec.pre_step)
    try:
        args = exp.run_main_block(cfg_root, patches)
    finally:
        hook.remove()
    epochs = args.schedule_config["train_epochs"]
    assert sorted(os.listdir(args.output_dir)) == sorted(
        ["argmax.instance_and_class_metric.npz", f"checkpoint{epochs:03d}.pth", "metric_group.pkl", "train.log"])
    # not weights_only: after the last step LambdaLR evaluates lambda(train_iters + 1), whose
    # base is negative: the saved lr is negative (power 1) or a Python complex (power 0.9)
    ckp = torch.load(os.path.join(args.output_dir, f"checkpoint{epochs:03d}.pth"), map_location="cpu", weights_only=False)
    assert ckp["epoch"] == epochs
    with open(os.path.join(args.output_dir, "metric_group.pkl"), "rb") as f:
        results = pickle.load(f).value()
    metrics = {k: (None if math.isnan(float(v)) else float(v)) for k, v in results.items()
               if k not in ("instanceIoU", "classIoU", "instanceDice", "classDice")}
    return rec, ckp, args, metrics


def check_fresh_states(exp, init_pth, cfg_root, data_dir, model, optim, out_dir):
    """init.pth's optimizer and lr_scheduler states equal those main.py builds itself: its
    `__main__` block runs with load_checkpoint wrapped to compare them, as --test-only (a
    get_args wrapper sets it) with test() a no-op."""
    seen = {}
    real_load = exp.main.load_checkpoint
    real_get_args = exp.main.get_args

    def load_checkpoint(ckp_path, model, optimizer, scheduler, device):
        ckp = torch.load(ckp_path, map_location="cpu", weights_only=True)
        seen["optimizer"] = optimizer.state_dict() == ckp["optimizer"]
        seen["lr_scheduler"] = scheduler.state_dict() == ckp["lr_scheduler"]
        return real_load(ckp_path, model, optimizer, scheduler, device)

    def get_args():
        args = real_get_args()
        args.test_only = True
        return args

    exp.run_main_block(cfg_root, [
        (exp.main, "torch", CpuTorch()), (exp.main, "load_checkpoint", load_checkpoint),
        (exp.main, "get_args", get_args), (exp.main, "test", lambda *a: None),
        (sys, "argv", ["main.py", "--model_checkpoint", init_pth, "--data_dir", data_dir,
                       "--output_dir", out_dir, "--model_yaml", model.yaml_name, "--data_yaml", NAME,
                       "--loss_yaml", LOSSES[0], "--schedule_yaml", NAME, "--optim_yaml", optim])])
    assert seen == {"optimizer": True, "lr_scheduler": True}, seen


# ------------------------------------------------------------------------------ expected outputs
def stored_values(state_dict):
    """{safetensors key: tensor}: `final.<name>` whole (<= FULL_LIMIT elements, dtype as is);
    bigger: `sample.<name>` = flat[range(0, numel, numel // SAMPLE_POINTS)] and `sum.<name>`
    = its float64 sum, shape (1,)."""
    out = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if v.numel() <= FULL_LIMIT:
            out[f"final.{k}"] = v.clone()
        else:
            flat = v.reshape(-1)
            out[f"sample.{k}"] = flat[:: flat.numel() // SAMPLE_POINTS].clone()
            out[f"sum.{k}"] = flat.double().sum().reshape(1)
    return out


def noise(values32, values64, losses32, losses64):
    """The differences between two runs' losses and stored values (int64 ones must agree)."""
    l32, l64 = np.array(losses32), np.array(losses64)
    w_abs = w_rel = s_rel = 0.0
    for k, a in values32.items():
        b = values64[k]
        if a.dtype == torch.int64:
            assert torch.equal(a, b), k
            continue
        d = (a.double() - b.double()).abs()
        if k.startswith("sum."):
            s_rel = max(s_rel, float((d / b.abs().clamp(min=1.0)).max()))
        else:
            w_abs = max(w_abs, float(d.max()))
            w_rel = max(w_rel, float((d / b.abs().clamp(min=1.0)).max()))
    return {"loss_abs_max": float(np.abs(l32 - l64).max()),
            "loss_rel_max": float((np.abs(l32 - l64) / np.abs(l64)).max()),
            "loss_rel_per_step": (np.abs(l32 - l64) / np.abs(l64)).tolist(),
            "weights_abs_max": w_abs,
            "weights_rel_max (|w32 - w64| / max(1, |w64|))": w_rel,
            "sums_rel_max (|s32 - s64| / max(1, |s64|))": s_rel}


def rankseg_command(model, loss, optim):
    fx = REL_OUT
    model_yaml = posixpath.join(fx, model.subdir, "model.yaml")
    return (f"rankseg exp --data_dir {fx}/data --output_dir O --model_yaml {model_yaml} "
            f"--data_yaml {fx}/data.yaml --loss_yaml {loss} --schedule_yaml {fx}/schedule.yaml "
            f"--optim_yaml {fx}/{optim}.yaml --test_yaml test_iou --predict_yaml argmax "
            f"--model_checkpoint O/init.pth --seed 0")


def fixture_run(exp, cfg_root, data_dir, init_pth, model, case, loss, optim, work, out):
    """One case of `model`: the run in float32 (the fixture), in float64 and in float32 with
    another batch order (torch seed 1; the noise figures); writes
    expected_<case>.safetensors / .json into out/<model.subdir>."""
    out = os.path.join(out, model.subdir)
    run = lambda tag, **kw: run_main(exp, cfg_root, data_dir, init_pth, model, loss, optim,
                                     os.path.join(work, model.key, f"{case}_{tag}"), **kw)
    rec, ckp, args, metrics = run("f32")
    rec64, ckp64, _, metrics64 = run("f64", float64=True)
    rec_r, ckp_r, _, _ = run("reordered", seed=1)
    sc, oc = args.schedule_config, args.optim_config
    k = len(rec.steps)
    assert k == len(rec.losses) == len(rec64.losses) == sc["train_epochs"]  # one batch per epoch
    assert [s["iter"] for s in rec.steps] == list(range(1, k + 1)) == [s["epoch"] for s in rec.steps]
    assert rec.steps == rec64.steps == rec_r.steps
    for i, s in enumerate(rec.steps):
        assert s["lr"] == oc["lr"] * lr_lambda(i, oc, sc), (i, s)
    values = stored_values(ckp["state_dict"])
    tensors = {"loss": torch.tensor(rec.losses, dtype=torch.float64),
               "lr": torch.tensor([s["lr"] for s in rec.steps], dtype=torch.float64),
               "iter": torch.tensor([s["iter"] for s in rec.steps], dtype=torch.int64),
               "epoch": torch.tensor([s["epoch"] for s in rec.steps], dtype=torch.int64)}
    tensors.update(values)
    save_file({n: v.contiguous() for n, v in tensors.items()}, os.path.join(out, f"expected_{case}.safetensors"))
    final_state = next(iter(ckp["optimizer"]["state"].values()))
    summary = {
        "loss_yaml": loss,
        "optim_yaml": optim,
        "criterion": ("JDTLosses get_criterion + Segmentor.forward_loss_hard_label (loss_ce + loss_jdt)"
                      if "jdt_weight" in args.loss_config else "the experiment's get_criterion + Segmentor.forward_loss"),
        "steps": k,
        "train_iters": sc["train_iters"],
        "train_epochs": sc["train_epochs"],
        "per_step": [dict(s, loss=l) for s, l in zip(rec.steps, rec.losses)],
        "per_step_loss_float64": rec64.losses,
        "per_step_loss_reordered": rec_r.losses,
        "epoch_changes": rec.epochs,
        "final_checkpoint": f"checkpoint{sc['train_epochs']:03d}.pth (epoch {ckp['epoch']})",
        "final_optimizer_step": float(final_state["step"]) if "step" in final_state else None,
        "final_scheduler_last_epoch": ckp["lr_scheduler"]["last_epoch"],
        "final_checkpoint_lr_group0 (repr)": repr(ckp["optimizer"]["param_groups"][0]["lr"]),
        "test_metrics_after_training": metrics,
        "test_metrics_after_training_float64": metrics64,
        "noise_float32_vs_float64": noise(values, stored_values(ckp64["state_dict"]), rec.losses, rec64.losses),
        "noise_float32_other_batch_order": noise(values, stored_values(ckp_r["state_dict"]), rec.losses, rec_r.losses),
        "command": rankseg_command(model, loss, optim),
    }
    with open(os.path.join(out, f"expected_{case}.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    return summary


# ------------------------------------------------------------------------------ main
def fmt(v):
    return "-" if v is None else f"{v:.1e}"


def case_table(summaries):
    """README lines: the cases' loss / optim yamls, per-step losses and lrs."""
    lines = ["| case | loss yaml | optim yaml | loss per step | lr (group 0) per step |", "|---|---|---|---|---|"]
    for case, s in summaries.items():
        lines.append(f"| `{case}` | {s['loss_yaml']} | {s['optim_yaml']} | "
                     + ", ".join(f"{p['loss']:.7f}" for p in s["per_step"]) + " | "
                     + ", ".join(f"{p['lr']:.6g}" for p in s["per_step"]) + " |")
    return lines


def noise_table(summaries):
    """README lines: the cases' noise figures (float64 and other-batch-order reruns)."""
    lines = ["| case | rerun | loss rel per step | weights abs | weights rel (/ max(1, abs w)) |", "|---|---|---|---|---|"]
    for case, s in summaries.items():
        for tag, key in (("float64", "noise_float32_vs_float64"), ("other order", "noise_float32_other_batch_order")):
            nz = s[key]
            rel = next(v for k, v in nz.items() if k.startswith("weights_rel"))
            lines.append(f"| `{case}` | {tag} | " + ", ".join(fmt(v) for v in nz["loss_rel_per_step"])
                         + f" | {fmt(nz['weights_abs_max'])} | {fmt(rel)} |")
    return lines


def write_readme(out, results, sizes):
    """out/README.md from results = {model key: ({case: summary}, number of state-dict entries)}."""
    summaries, n_keys = results["deeplabv3plus"]
    mit_summaries, mit_keys = results["mit"]
    lines = [
        "# Training parity fixtures (`rankseg exp`, training)",
        "",
        "Written by `scripts/make_train_fixtures.py` (torch 2.5.1 CPU, one thread, seeded) from the",
        "RankSEG-RMA experiment's own main.py + train.py (exp/, run as its `__main__` block with",
        "CPU / no-download patches in the process; see the script's docstring).",
        "",
        "## Setup",
        "- `data/VOCdevkit/VOC2012`: 4 train images (`train_aug.txt` lines",
        "  `/JPEGImages/tK.png /SegmentationClassAug/tK.png`; 8-bit RGB PNG 64 x 64, exactly",
        "  left-right symmetric with symmetric labels) and 2 val images (`val.txt`: v0 64 x 64 and",
        "  v1 48 x 56, JPEG, since the experiment hard-codes `JPEGImages/<id>.jpg`; labels PNG).",
        "  Labels hold classes 0..2 and a few 255 (ignored). With scale 1..1, crop = image size and",
        "  symmetric pairs every train augmentation is the identity (checked with the",
        "  experiment's own `__getitem__` under 8 `random` seeds): only the batch order is random,",
        "  and one batch holds all 4 images, so it changes nothing but float rounding.",
        "- `data.yaml` (configs/datas/pascal_voc.yaml, num_classes 3, scale 1..1, crop [64, 64]),",
        "  `model.yaml` (deeplabv3plus / resnet18d, output_stride 8, widths 16 / 8 / 4, rates",
        "  [2, 4, 6], dropout 0, aux), `schedule.yaml` (by iterations: train_iters 4, batch 4,",
        "  warmup_ratio 0.3, save_epochs 1, num_workers 0), `adamw_lr6e-4.yaml` and `sgd_lr1e-2.yaml`",
        "  (the shipped ones); test_iou, argmax and the loss yamls are the shipped configs.",
        f"- `keys.txt`: the Segmentor's {n_keys} state-dict entries in state-dict order: name, dtype, shape.",
        "",
        "## Formula (initial weights; `init.pth` is not committed)",
        "Every state-dict entry from its name and shape only. With i the flat C-order index,",
        "L = len(name), in float64: t_i = 0.7 * i + 0.1 * L (each product rounded, then the sum),",
        "s_i = sin(t_i) (libm; Rust's f64::sin); the value is computed in float64 and rounded to",
        "float32:",
        "- `*.num_batches_tracked`: 0 (int64, shape [])",
        "- `*.running_mean`: 0.1 * s_i",
        "- `*.running_var`: 1.0 + 0.5 * |s_i|",
        "- `*.bias` (BatchNorm, LayerNorm, conv and Linear biases alike): 0.1 * s_i",
        "- `*.weight`, 1-D (BatchNorm, LayerNorm): 1.0 + 0.1 * s_i",
        "- `*.weight`, >= 2-D (conv, Linear): s_i / sqrt(fan_in), fan_in = prod(shape[1:])",
        "",
        "`init.pth` is main.py's checkpoint format: {\"epoch\": 0, \"state_dict\", \"optimizer\": a",
        "fresh optimizer's state_dict(), \"lr_scheduler\": a fresh LambdaLR's}; the script checks",
        "that these equal the states main.py builds itself, so the file means \"no checkpoint, these",
        "weights\". main.py loads the saved optimizer state into the optimizer its optim yaml builds",
        "(an AdamW state in an SGD fails at the first step: KeyError 'momentum'), so there is one",
        "per model and optim yaml: `/tmp/venv/bin/python scripts/make_train_fixtures.py --write-init",
        "PATH [--optim adamw_lr6e-4|sgd_lr1e-2] [--model deeplabv3plus|mit]`.",
        "",
        "## Cases: expected_<case>.safetensors / .json",
        "",
        *case_table(summaries),
        "",
        "- `loss` (K,) float64: `loss.item()` of every optimizer step; `lr` (K,) float64: param",
        "  group 0's lr as that step uses it (read before optimizer.step()); `iter`, `epoch` (K,)",
        "  int64: train.py's curr_iter and the epoch (K = 5, one step per epoch).",
        "- The state dict of the last checkpoint main.py saves (checkpoint005.pth): entries with",
        f"  <= {FULL_LIMIT} elements whole as `final.<name>` (float32 / int64 as saved); bigger ones as",
        f"  `sample.<name>` = flat[range(0, numel, numel // {SAMPLE_POINTS})] and `sum.<name>` (1,)",
        "  float64 = the sum of all elements.",
        "- The json: per step iter / epoch / lr / loss, what each epoch changed, the final test",
        "  metrics (argmax, test_iou), the noise figures below, and the `rankseg exp` command a",
        "  test runs (O = its output folder, O/init.pth written first, for the case's optim yaml).",
        "- `dice_ic_present_all*`: the experiment's main.py ignores the JDT keys (its get_criterion",
        "  is FocalLoss only, so it would train exactly as `ce`); these cases use JDTLosses'",
        "  criterion and forward_loss_hard_label instead, as rankseg does (SPEC.md \"Training\").",
        "",
        "## Noise",
        "Two perturbed reruns of each case: the same run in float64 (Segmentor in double) and in",
        "float32 with another batch order (torch seed 1). Loss: |dl| / |l| per step; weights: max",
        "|dw| over the stored `final.*` / `sample.*` values (BatchNorm running statistics included).",
        "",
        *noise_table(summaries),
        "",
        "The AdamW runs are chaotic: AdamW's first full-lr step (step 2) is about lr * sign(grad),",
        "so elements whose gradient is below float32 rounding noise step +-lr in either direction",
        "and the next gradients differ more; steps 1-3 stay tight, steps 4-5 and the final weights",
        "(BatchNorm running_var above all) differ by up to ~1e-3 relative / ~0.1 absolute. The SGD",
        "runs stay at float32 rounding level throughout: they are the tight checks of training.",
        "",
        "## main.py behaviour seen here",
        "- train_iters 4 with one batch per epoch gives train_epochs = 4 // 1 + 1 = 5 and 5 steps;",
        "  the 5th at lr exactly 0: weights unchanged bit for bit, while BatchNorm running stats,",
        "  num_batches_tracked (5), the scheduler (last_epoch 5) and the optimizer state (AdamW step",
        "  5 and moments; SGD momentum buffers) still move.",
        "- The scheduler steps once more after the last step, to lambda(5) with T = 4: its base",
        "  1 - (5 - w) / (T - w) is negative, so checkpoint005.pth stores as every group's lr a",
        "  negative float with power 1 (AdamW: " + repr(summaries["ce"]["final_checkpoint_lr_group0 (repr)"]) + ")",
        "  and a Python complex with power 0.9 (SGD: " + repr(summaries["ce_sgd"]["final_checkpoint_lr_group0 (repr)"]) + "),",
        "  pickled as `builtins.complex` (torch.load(weights_only=True) refuses the file). Unused",
        "  here (training ends), but a reader of these checkpoints must accept it.",
        "- remove_old (test_iou) leaves only checkpoint005.pth; the test runs once, after epoch 5.",
        "- After 5 steps argmax predicts one class on every val pixel in every case (mAccD 33.33):",
        "  the test metrics check the evaluation path, not the training.",
        "",
        "## MiT case: mit/",
        "",
        "- `mit/model.yaml`: segformer / mit_b0, output_stride 32, out_channels 32,",
        "  aux_out_channels 16, dropout 0, align_corners false, aux, and `drop_path_rate: 0`: a key",
        "  of rankseg's model yaml (MiT's stochastic depth). The experiment's Segmentor ignores it",
        "  (mit_b0 builds with drop_path_rate 0.1), so the script calls",
        "  `model.backbone.backbone.reset_drop_path(0.0)` on every Segmentor it builds: neither side",
        "  drops paths. MiT's `model_zoo.load_url` returns a freshly built encoder's weights (no",
        "  download; the formula overwrites them). The block LayerNorms have eps 1e-6.",
        "- Data, `data.yaml`, `schedule.yaml` and the optim yamls are the parent folder's (`../`);",
        "  the formula is the same (LayerNorm and Linear entries included).",
        f"- `mit/keys.txt`: the Segmentor's {mit_keys} state-dict entries in state-dict order.",
        "- `mit/expected_<case>.safetensors / .json`: as above (same keys and json fields; the",
        "  command names `--model_yaml " + posixpath.join(REL_OUT, "mit", "model.yaml") + "`).",
        "",
        *case_table(mit_summaries),
        "",
        *noise_table(mit_summaries),
        "",
        "Unlike deeplabv3plus's, the MiT SGD run drifts from float64 too (loss ~5e-6 relative at",
        "step 3, ~3e-4 at step 5; final weights up to ~7e-4, the decoder's BatchNorm running",
        "statistics (method.convs.3, aux_conv) above all, parameters ~5e-5); only its other batch",
        "order stays at rounding level. At the initial weights the float32 gradient is ~1e-5 off",
        "float64 as a whole (deeplabv3plus: ~1e-6), the stage-3/4 attention queries' gradients",
        "(1e-10 to 1e-8) only a few percent accurate (norm4.bias: true gradient 0, BatchNorm",
        "follows). The AdamW run is chaotic as deeplabv3plus's is.",
        "",
        "## Sizes (README.md aside)",
        "",
    ]
    lines += [f"- `{p}`: {n} bytes" for p, n in sizes]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def make_cfg_root(tmp, rma, out):
    """A working folder with configs/<kind>/: the fixture's data / schedule yamls as
    `train_exp`, each model's model.yaml as its yaml_name, its optim yamls under their own
    names, and the shipped loss / test / predict yamls main.py reads."""
    cfg_root = os.path.join(tmp, "cfg")
    for kind in ("models", "datas", "schedules", "optims", "losses", "test", "predict"):
        os.makedirs(os.path.join(cfg_root, "configs", kind))
    for kind, f in FIXTURE_YAMLS.items():
        shutil.copy(os.path.join(out, f), os.path.join(cfg_root, "configs", kind, f"{NAME}.yaml"))
    for m in MODELS:
        shutil.copy(os.path.join(out, m.subdir, "model.yaml"),
                    os.path.join(cfg_root, "configs", "models", f"{m.yaml_name}.yaml"))
    for optim in OPTIMS:
        shutil.copy(os.path.join(out, f"{optim}.yaml"), os.path.join(cfg_root, "configs", "optims"))
    for kind, names in (("losses", LOSSES), ("test", ["test_iou"]), ("predict", ["argmax"])):
        for n in names:
            shutil.copy(os.path.join(rma, "configs", kind, f"{n}.yaml"), os.path.join(cfg_root, "configs", kind))
    return cfg_root


def train_model(exp, model, cfg_root, data_dir, tmp, build):
    """`model`'s initial checkpoints (one per optim yaml of its cases, in tmp, checked against
    main.py's fresh states), its keys.txt and its cases. Returns ({case: summary}, number of
    state-dict entries)."""
    inits = {}
    for optim in [o for o in OPTIMS if o in {o for _, _, o in model.cases}]:
        inits[optim] = os.path.join(tmp, f"init_{model.key}_{optim}.pth")
        state_dict = write_init(inits[optim], optim, build, exp=exp, model=model)
        check_fresh_states(exp, inits[optim], cfg_root, data_dir, model, optim,
                           os.path.join(tmp, f"fresh_{model.key}_{optim}"))
    with open(os.path.join(build, model.subdir, "keys.txt"), "w") as f:
        f.writelines(f"{k} {str(v.dtype).replace('torch.', '')} {list(v.shape)}\n" for k, v in state_dict.items())
    summaries = {case: fixture_run(exp, cfg_root, data_dir, inits[optim], model, case, loss, optim, tmp, build)
                 for case, loss, optim in model.cases}
    return summaries, len(state_dict)


def keep_model(model, out, build):
    """A model not retrained (--models): its files copied from the existing fixture folder
    `out`; returns ({case: summary} from its jsons, number of keys.txt lines)."""
    for f in model.files():
        src = os.path.join(out, f)
        if not os.path.isfile(src):
            raise SystemExit(f"{src} missing: train {model.key} too (--models)")
        os.makedirs(os.path.dirname(os.path.join(build, f)), exist_ok=True)
        shutil.copy(src, os.path.join(build, f))
    summaries = {}
    for case, _, _ in model.cases:
        with open(os.path.join(build, model.subdir, f"expected_{case}.json")) as f:
            summaries[case] = json.load(f)
    with open(os.path.join(build, model.subdir, "keys.txt")) as f:
        return summaries, sum(1 for _ in f)


def main():
    ap = fixture_parser(__doc__, DEFAULT_OUT)
    ap.add_argument("--jdt-losses", default=os.environ.get("JDTLOSSES", "/tmp/jdtlosses"))
    ap.add_argument("--models", nargs="+", default=MODEL_KEYS, choices=MODEL_KEYS,
                    help="the models to train (default: all); the others' files are kept from --out")
    ap.add_argument("--write-init", metavar="PATH", help="only write the initial checkpoint to PATH "
                    "(from the yamls in --out)")
    ap.add_argument("--optim", default=OPTIMS[0], choices=OPTIMS, help="the optim yaml of --write-init")
    ap.add_argument("--model", default=MODEL_KEYS[0], choices=MODEL_KEYS, help="the model of --write-init")
    args = ap.parse_args()
    deterministic_cpu()
    exp = Exp(args.rma_exp, args.jdt_losses)
    if args.write_init:
        write_init(args.write_init, args.optim, args.out, exp=exp, model=MODELS[MODEL_KEYS.index(args.model)])
        return
    out = os.path.abspath(args.out)
    with build_dir(out, "train_exp") as build, tempfile.TemporaryDirectory() as tmp:
        data = read_yaml(os.path.join(args.rma_exp, "configs", "datas", "pascal_voc.yaml"))
        data.update(DATA_OVERRIDES)
        write_yaml(os.path.join(build, "data.yaml"), data)
        write_yaml(os.path.join(build, "schedule.yaml"), SCHEDULE_YAML)
        for optim in OPTIMS:
            shutil.copy(os.path.join(args.rma_exp, "configs", "optims", f"{optim}.yaml"), build)
        for m in MODELS:
            if m.key in args.models:
                os.makedirs(os.path.join(build, m.subdir), exist_ok=True)
                write_yaml(os.path.join(build, m.subdir, "model.yaml"), m.model_yaml)
        kept = {m.key: keep_model(m, out, build) for m in MODELS if m.key not in args.models}
        data_dir = os.path.join(build, "data")
        write_dataset(data_dir)
        check_identity_augmentation(exp, data_dir, data)
        cfg_root = make_cfg_root(tmp, args.rma_exp, build)
        results = {m.key: kept[m.key] if m.key in kept else train_model(exp, m, cfg_root, data_dir, tmp, build)
                   for m in MODELS}
        write_readme(build, results, file_sizes(build))
        total = swap_in(build, out, "train_exp", SIZE_LIMIT)
    for key, (summaries, _) in results.items():
        for case, s in summaries.items():
            print(key, case, json.dumps({k: s[k] for k in ("per_step", "noise_float32_vs_float64",
                                                           "noise_float32_other_batch_order", "epoch_changes")},
                                        indent=1))
    print(f"wrote {out} ({total} bytes)")


if __name__ == "__main__":
    main()
