"""Train-time data pipeline fixtures (src/data/train/): the experiment's own datasets and
transforms (datas/datasets/*.py: RandScale, RandomHorizontalFlip, Crop(rand) with its Pad,
ToTensor, Normalize / WindowStandardize, and each dataset's __getitem__ label handling) run
on a few small files laid out as the experiment reads them, with the transforms' random
draws replaced by recorded ones.

The transform module calls `random.random()` (scale, then flip) and `random.randint(0, n)`
(crop row, then column); we swap its `random` for a recorder that answers from a seeded
random.Random, except for scripted scale / flip draws that make sure every case kind occurs
(padding on one or both axes, cropping, flip and no flip), and write what it answered.

Writes tests/fixtures/augment/:
  data/...                   the files (VOC, ADE20K, Cityscapes, LiTS, KiTS layouts)
  configs.json               the data configs, as data yamls hold them
  draws.json                 per case: dataset, file, the draws and what they imply
  expected.safetensors       per case `<name>.image` (C, H, W) float32, `<name>.label` (H, W)
                             int64, exactly as __getitem__ returns them
Usage: /tmp/venv/bin/python scripts/make_augment_fixtures.py [--rma-exp DIR] [--out DIR]
       (or RMA_EXP=DIR); seeded, rerunning gives identical files.
"""

import argparse
import json
import os
import random
import shutil
import struct
import sys

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

SEED = 20240
CROP = [24, 32]
CT_CROP = [20, 20]

CONFIGS = {
    "voc": dict(dataset="pascal_voc", in_channels=3, num_classes=21, scale_min=0.5, scale_max=2.0,
                crop_size=CROP, ignore_index=255, reduce_zero_label=False, image_prefix="/JPEGImages/",
                image_suffix=".jpg", label_prefix="/SegmentationClassAug/", label_suffix=".png"),
    "ade": dict(dataset="ade20k", in_channels=3, num_classes=150, scale_min=0.5, scale_max=2.0,
                crop_size=CROP, ignore_index=255, reduce_zero_label=True, image_prefix="/images/",
                image_suffix=".jpg", label_prefix="/annotations/", label_suffix=".png"),
    "cityscapes": dict(dataset="cityscapes", in_channels=3, num_classes=19, scale_min=0.5, scale_max=2.0,
                       crop_size=[16, 40], ignore_index=255, reduce_zero_label=False,
                       image_prefix="/leftImg8bit/", image_suffix="_leftImg8bit.png", label_prefix="/gtFine/",
                       label_suffix="_gtFine_labelTrainIds.png"),
    "lits": dict(dataset="lits", fold=0, num_cases=5, in_channels=1, num_classes=2, scale_min=0.5,
                 scale_max=2.0, window_low=-60, window_high=140, crop_size=CT_CROP, ignore_index=255,
                 reduce_zero_label=False, image_prefix=None, image_suffix=None, label_prefix=None,
                 label_suffix=None),
    "kits": dict(dataset="kits", fold=4, num_cases=5, in_channels=1, num_classes=2, scale_min=0.5,
                 scale_max=2.0, window_low=-200, window_high=300, crop_size=CT_CROP, ignore_index=255,
                 reduce_zero_label=False, image_prefix=None, image_suffix=None, label_prefix=None,
                 label_suffix=None),
}


class Recorder:
    """Stands in for the `random` module inside datas/datasets/transform.py."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.script = []  # values for the next random() calls, before the seeded ones
        self.log = []

    def random(self):
        u = self.script.pop(0) if self.script else self.rng.random()
        self.log.append(("random", u))
        return u

    def randint(self, a, b):
        v = self.rng.randint(a, b)
        self.log.append(("randint", (a, b), v))
        return v


def bits(x):
    """The IEEE bits of a float64, so the draw survives JSON exactly."""
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def texture(rng, h, w, c):
    """Smooth gradients plus noise: every interpolation weight shows in the output."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * 7 + xx * 3 + 40 * k) % 256 for k in range(c)], -1).astype(np.float64)
    return np.clip(base + rng.normal(0, 30, (h, w, c)), 0, 255).astype(np.uint8)


def blocks(rng, h, w, values):
    """A label of rectangles of the given values (so nearest-neighbour edges move)."""
    lab = np.full((h, w), values[0], np.int64)
    for _ in range(8):
        y, x = rng.integers(0, h), rng.integers(0, w)
        lab[y:y + rng.integers(2, h), x:x + rng.integers(2, w)] = rng.choice(values)
    return lab


def write_files(root, rng):
    voc = f"{root}/VOCdevkit/VOC2012"
    os.makedirs(f"{voc}/JPEGImages")
    os.makedirs(f"{voc}/SegmentationClassAug")
    os.makedirs(f"{voc}/ImageSets/Segmentation")
    sizes = {"2008_000123": (29, 37), "2007_000032": (40, 26)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(f"{voc}/JPEGImages/{name}.jpg", texture(rng, h, w, 3), [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(f"{voc}/SegmentationClassAug/{name}.png", blocks(rng, h, w, [0, 3, 15, 20, 255]).astype(np.uint8))
    # train_aug.txt is not sorted: the split must keep its order.
    with open(f"{voc}/ImageSets/Segmentation/train_aug.txt", "w") as f:
        for name in sizes:
            f.write(f"/JPEGImages/{name}.jpg /SegmentationClassAug/{name}.png\n")

    ade = f"{root}/ade/ADEChallengeData2016"
    os.makedirs(f"{ade}/images/training")
    os.makedirs(f"{ade}/annotations/training")
    cv2.imwrite(f"{ade}/images/training/ADE_train_00000001.jpg", texture(rng, 30, 30, 3))
    cv2.imwrite(f"{ade}/annotations/training/ADE_train_00000001.png",
                blocks(rng, 30, 30, [0, 1, 2, 150]).astype(np.uint8))

    city = f"{root}/cityscapes"
    os.makedirs(f"{city}/leftImg8bit/train/aachen")
    os.makedirs(f"{city}/gtFine/train/aachen")
    stem = "aachen_000000_000019"
    cv2.imwrite(f"{city}/leftImg8bit/train/aachen/{stem}_leftImg8bit.png", texture(rng, 21, 30, 3))
    cv2.imwrite(f"{city}/gtFine/train/aachen/{stem}_gtFine_labelTrainIds.png",
                blocks(rng, 21, 30, [0, 1, 13, 18, 255]).astype(np.uint8))

    # As datas/prepare/prepare_lits_kits.py writes them: float64 HU slices, int8 masks.
    for name, slices in {"lits": ["0_3", "1_5", "3_2"], "kits": ["4_1", "2_9"]}.items():
        os.makedirs(f"{root}/{name}/train")
        for i, s in enumerate(slices):
            h, w = (17, 23) if i % 2 == 0 else (26, 14)
            ct = rng.normal(40, 150, (h, w)).round(1)
            mask = blocks(rng, h, w, [0, 1, 2]).astype(np.int8)
            np.savez_compressed(f"{root}/{name}/train/{s}.npz", ct=ct, mask=mask)


def import_experiment(rma_exp):
    sys.path.insert(0, rma_exp)
    from datas.datasets import transform, base_dataset, medical_dataset, lits, kits
    return transform, base_dataset.BaseDataset, medical_dataset.MedicalDataset, lits.LiTS, kits.KiTS


def dataset(kind, cfg, train_list, classes):
    """The experiment's dataset object with our file list (its __init__ asserts the real
    dataset's size, so the fields are set the way __init__ sets them)."""
    BaseDataset, MedicalDataset, LiTS, KiTS = classes
    keys = ["in_channels", "num_classes", "scale_min", "scale_max", "crop_size", "ignore_index",
            "reduce_zero_label", "image_prefix", "image_suffix", "label_prefix", "label_suffix"]
    args = {k: cfg[k] for k in keys}
    if cfg["dataset"] in ("lits", "kits"):
        cls = LiTS if cfg["dataset"] == "lits" else KiTS
        ds = cls.__new__(cls)
        MedicalDataset.__init__(ds, train=True, data_dir="", fold=cfg["fold"], num_cases=cfg["num_cases"],
                                window_low=cfg["window_low"], window_high=cfg["window_high"], **args)
    else:
        ds = BaseDataset.__new__(BaseDataset)
        BaseDataset.__init__(ds, train=True, data_dir="", **args)
    ds.image_list = list(train_list)
    ds.transform = ds.get_transform()
    return ds


def train_lists(root):
    """The train splits as the experiment's get_image_list builds them (VOC: train_aug.txt
    in file order; glob-based ones sorted, glob's own order being the directory's)."""
    with open(f"{root}/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt") as f:
        voc = [f"{root}/VOCdevkit/VOC2012{line.rstrip(chr(10)).split()[0]}" for line in f.readlines()]
    from glob import glob
    out = {"voc": voc,
           "ade": sorted(glob(f"{root}/ade/ADEChallengeData2016/images/training/*.jpg")),
           "cityscapes": sorted(glob(f"{root}/cityscapes/leftImg8bit/train/**/*.png", recursive=True))}
    for name in ("lits", "kits"):
        cfg = CONFIGS[name]
        size = cfg["num_cases"] // 5
        cases = list(range(cfg["num_cases"]))
        fold = cfg["fold"]
        val = set(cases[size * fold: size * (fold + 1)]) if fold <= 3 else set(cases[size * fold:])
        files = glob(f"{root}/{name}/train/*.npz")
        key = lambda p: tuple(int(t) for t in os.path.basename(p)[:-4].split("_"))
        out[name] = sorted((p for p in files if int(p.split("/")[-1].split("_")[0]) not in val), key=key)
    return out


# Scripted (scale u, flip u) per case; None leaves a draw to the seeded generator. Scale
# u = 0.02 -> ~0.53 (pads both axes), 0.97 -> ~1.96 (crops both), 0.3 -> 0.95 (pads one axis
# of the wider crops), 0.3367 -> 1.005 (cv2 keeps the size and copies); flip below / above 0.5.
SCRIPT = [(0.02, 0.1), (0.97, 0.9), (0.3, 0.2), (None, None), (0.55, 0.7), (0.3367, 0.6), (None, None)]
DRAWS_PER_FILE = {"voc": 3, "ade": 2, "cityscapes": 2, "lits": 2, "kits": 2}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rma-exp", default=os.environ.get("RMA_EXP", "/tmp/rma/exp"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "augment"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    transform, *classes = import_experiment(os.path.abspath(args.rma_exp))
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    root = f"{out}/data"
    write_files(root, np.random.default_rng(SEED))

    rec = Recorder(SEED)
    transform.random = rec
    lists = train_lists(root)
    tensors, cases, k = {}, [], 0
    for name, cfg in CONFIGS.items():
        ds = dataset(name, cfg, lists[name], classes)
        for index, file in enumerate(lists[name]):
            for d in range(DRAWS_PER_FILE[name]):
                u_scale, u_flip = SCRIPT[k % len(SCRIPT)]
                k += 1
                rec.script = [u for u in (u_scale, u_flip) if u is not None]
                if u_scale is None and u_flip is not None:
                    raise ValueError("a scripted flip needs a scripted scale (draw order)")
                rec.log = []
                image, label, _ = ds[index]
                (_, us), (_, uf), (_, (_, top_max), top), (_, (_, left_max), left) = rec.log
                scale = cfg["scale_min"] + (cfg["scale_max"] - cfg["scale_min"]) * us
                case = f"{name}_{index}_{d}"
                cases.append(dict(name=case, config=name, index=index, file=os.path.relpath(file, out),
                                  u_scale_bits=bits(us), scale_bits=bits(scale), scale=scale, u_flip=uf,
                                  flip=uf < 0.5, top=top, left=left,
                                  padded=[top_max + cfg["crop_size"][0], left_max + cfg["crop_size"][1]]))
                tensors[f"{case}.image"] = image.contiguous()
                tensors[f"{case}.label"] = label.contiguous()
    save_file(tensors, f"{out}/expected.safetensors")
    meta = dict(cv2=cv2.__version__, numpy=np.__version__, torch=torch.__version__, seed=SEED,
                splits={k: [os.path.relpath(p, out) for p in v] for k, v in lists.items()}, cases=cases)
    with open(f"{out}/draws.json", "w") as f:
        json.dump(meta, f, indent=1)
    with open(f"{out}/configs.json", "w") as f:
        json.dump(CONFIGS, f, indent=1)
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
