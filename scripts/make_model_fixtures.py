#!/usr/bin/env python3
"""Write tiny random SegFormer / UperNet(ConvNeXt) checkpoints plus transformers logits.

    /tmp/venv/bin/python scripts/make_model_fixtures.py [--out tests/fixtures/models]

Needs torch (CPU is enough), numpy, transformers (4.46-4.49 work with torch 2.5.1) and
safetensors.  Nothing is downloaded: every checkpoint is built from a config and filled
with seeded random weights (every parameter and buffer, so that a bug in any layer changes
the logits).  Deterministic: CPU, one thread, float32, fixed seeds; rerunning gives
identical files.  CI never runs this; the Rust tests only read what it wrote.

Per case directory (<out>/<case>/):
  config.json, model.safetensors   model.save_pretrained(dir, safe_serialization=True)
  input.npy / logits.npy           float32; model(pixel_values=input).logits
  input_odd.npy / logits_odd.npy   same for an input whose size is not a multiple of 32
  aux_head*.npy                    UperNet only: the auxiliary FCN head's raw output at the
                                   stage-3 resolution (transformers' forward() upsamples it
                                   bilinearly to the input size but only uses it for the
                                   loss; it is NOT part of .logits)
  keys.txt                         every tensor in model.safetensors: name, dtype, shape
<out>/README.md                    files, shapes, versions, and the facts listed below
<out>/manifest.json                shapes, dtypes, sha256, max |logit| per file, the facts

Facts recorded by inspecting the instantiated modules and by instrumenting one forward
(printed, and written to README.md / manifest.json): the eps of every LayerNorm and
BatchNorm, the GELU variant, every F.interpolate / F.adaptive_avg_pool2d call (caller,
sizes, mode, align_corners), and SegFormer's decode-head concatenation order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections import OrderedDict

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import transformers
from safetensors import safe_open
from transformers import (
    ConvNextConfig,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)
from transformers.models.convnext.modeling_convnext import ConvNextLayer, ConvNextLayerNorm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "models")
SIZE_LIMIT = 2 * 1024 * 1024  # the whole fixture tree must stay under this


# ---------------------------------------------------------------------------------------
# model construction and randomisation (also imported by scripts/bench_models_torch.py)
# ---------------------------------------------------------------------------------------

def segformer_config(**kw) -> SegformerConfig:
    return SegformerConfig(**kw)


def upernet_convnext_config(backbone: dict, **kw) -> UperNetConfig:
    backbone = dict(backbone)
    backbone.setdefault("out_features", ["stage1", "stage2", "stage3", "stage4"])
    backbone.setdefault("drop_path_rate", 0.0)
    return UperNetConfig(backbone_config=ConvNextConfig(**backbone), **kw)


def randomize_(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer of `model` with seeded random values.

    Conv2d / Linear weights ~ N(0, 1/fan_in) (keeps activations O(1) through depth), biases
    ~ N(0, 0.1^2); LayerNorm (nn.LayerNorm and ConvNextLayerNorm) weight ~ N(1, 0.25^2),
    bias ~ N(0, 0.2^2); BatchNorm weight ~ N(1, 0.25^2), bias ~ N(0, 0.2^2), running_mean ~
    N(0, 0.2^2), running_var ~ U(0.5, 1.5); ConvNeXt layer_scale_parameter ~ U(0.25, 1).
    Fails if any state_dict entry other than BatchNorm's num_batches_tracked is left over.
    """
    g = torch.Generator().manual_seed(seed)

    def normal(t, mean, std):
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64).mul(std).add(mean).to(t.dtype))

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64).mul(hi - lo).add(lo).to(t.dtype))

    done = set()
    with torch.no_grad():
        for mname, m in model.named_modules():
            p = mname + "." if mname else ""
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()  # conv: in/groups*kh*kw, linear: in
                normal(m.weight, 0.0, 1.0 / math.sqrt(fan_in))
                done.add(p + "weight")
                if m.bias is not None:
                    normal(m.bias, 0.0, 0.1)
                    done.add(p + "bias")
            elif isinstance(m, (nn.LayerNorm, ConvNextLayerNorm)):
                normal(m.weight, 1.0, 0.25)
                normal(m.bias, 0.0, 0.2)
                done.update([p + "weight", p + "bias"])
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                normal(m.weight, 1.0, 0.25)
                normal(m.bias, 0.0, 0.2)
                normal(m.running_mean, 0.0, 0.2)
                uniform(m.running_var, 0.5, 1.5)
                done.update([p + "weight", p + "bias", p + "running_mean", p + "running_var"])
            elif isinstance(m, ConvNextLayer) and m.layer_scale_parameter is not None:
                uniform(m.layer_scale_parameter, 0.25, 1.0)
                done.add(p + "layer_scale_parameter")
    left = [k for k in model.state_dict() if k not in done and not k.endswith("num_batches_tracked")]
    if left:
        raise SystemExit(f"randomize_: not randomised: {left}")
    model.eval()


SMALL = 0.01  # scale of the "small-activation" parts made by expose_norm_eps_


def expose_norm_eps_(model: nn.Module, small_stages=()) -> list:
    """Make every kind of norm see small-variance inputs somewhere, so that a wrong eps
    changes the logits by far more than float32 rounding does (with O(1) activations,
    eps 1e-5 vs 1e-6 moves the logits by only ~1e-5).  The network stays well behaved:

    * BatchNorm (SegFormer decode head, every UperNet ConvModule): the conv in front
      (bias-free) is scaled by s = SMALL, running_mean by s, running_var by s^2, so the
      BN output is unchanged except that eps now weighs like eps / s^2 = 0.1 * eps / 1e-5.
    * SegFormer stages in `small_stages`: patch-embedding proj and its LayerNorm, the sr
      conv, attention.output.dense and mlp.dense2 (weights and biases) scaled by s, so the
      whole residual stream of that stage is ~s and all five LayerNorm call sites there
      (patch LN, layer_norm_1, sr layer_norm, layer_norm_2, encoder.layer_norm.<i>) see
      variances ~1e-4.
    * ConvNeXt stages in `small_stages` (0 = the stem and stage 1): the stem conv and stem
      LN (stage 0) or downsampling conv, each block's dwconv and layer_scale_parameter
      scaled by s, so the stream is ~s and the stem / block / downsampling /
      hidden_states_norms LayerNorms see variances ~1e-4.
    Returns the names of the scaled tensors.
    """
    s = SMALL
    touched = []

    def scale(mod, names, f):
        for n in names:
            t = getattr(mod, n, None)
            if t is not None:
                t.mul_(f)
                touched.append(f"{mod_names[id(mod)]}.{n}")

    mod_names = {id(m): n for n, m in model.named_modules()}
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "conv") and isinstance(getattr(m, "batch_norm", None), nn.BatchNorm2d):
                scale(m.conv, ["weight", "bias"], s)
                scale(m.batch_norm, ["running_mean"], s)
                scale(m.batch_norm, ["running_var"], s * s)
        if isinstance(model, SegformerForSemanticSegmentation):
            head = model.decode_head
            scale(head.linear_fuse, ["weight", "bias"], s)
            scale(head.batch_norm, ["running_mean"], s)
            scale(head.batch_norm, ["running_var"], s * s)
            enc = model.segformer.encoder
            for i in small_stages:
                scale(enc.patch_embeddings[i].proj, ["weight", "bias"], s)
                scale(enc.patch_embeddings[i].layer_norm, ["weight", "bias"], s)
                for blk in enc.block[i]:
                    att = blk.attention
                    if att.self.sr_ratio > 1:
                        scale(att.self.sr, ["weight", "bias"], s)
                    scale(att.output.dense, ["weight", "bias"], s)
                    scale(blk.mlp.dense2, ["weight", "bias"], s)
        if isinstance(model, UperNetForSemanticSegmentation):
            bb = model.backbone
            for i in small_stages:
                stage = bb.encoder.stages[i]
                if i == 0:
                    scale(bb.embeddings.patch_embeddings, ["weight", "bias"], s)
                    scale(bb.embeddings.layernorm, ["weight", "bias"], s)
                else:
                    scale(stage.downsampling_layer[1], ["weight", "bias"], s)
                for layer in stage.layers:
                    scale(layer.dwconv, ["weight", "bias"], s)
                    if layer.layer_scale_parameter is not None:
                        scale(layer, ["layer_scale_parameter"], s)
                    else:
                        scale(layer.pwconv2, ["weight", "bias"], s)
    return touched


# ---------------------------------------------------------------------------------------
# instrumentation
# ---------------------------------------------------------------------------------------

class CallRecorder:
    """Record F.interpolate / F.adaptive_avg_pool2d calls made while active."""

    def __init__(self):
        self.calls = []

    @staticmethod
    def _caller():
        f = sys._getframe(2)
        while f is not None and os.path.basename(f.f_code.co_filename) in ("functional.py", "pooling.py", "module.py"):
            f = f.f_back
        obj = f.f_locals.get("self") if f is not None else None
        cls = type(obj).__name__ if obj is not None else "?"
        return f"{cls}.{f.f_code.co_name}" if f is not None else "?"

    def __enter__(self):
        self._interp = F.interpolate
        self._pool = F.adaptive_avg_pool2d
        rec = self

        def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None, *a, **k):
            out = rec._interp(input, size, scale_factor, mode, align_corners, *a, **k)
            rec.calls.append({
                "op": "interpolate", "caller": rec._caller(), "mode": mode,
                "align_corners": align_corners, "scale_factor": scale_factor,
                "in_hw": list(input.shape[2:]), "out_hw": list(out.shape[2:]),
                "identity": bool(tuple(input.shape[2:]) == tuple(out.shape[2:])),
            })
            return out

        def adaptive_avg_pool2d(input, output_size):
            out = rec._pool(input, output_size)
            rec.calls.append({
                "op": "adaptive_avg_pool2d", "caller": rec._caller(),
                "in_hw": list(input.shape[2:]), "out_hw": list(out.shape[2:]),
            })
            return out

        F.interpolate = interpolate
        F.adaptive_avg_pool2d = adaptive_avg_pool2d
        return self

    def __exit__(self, *exc):
        F.interpolate = self._interp
        F.adaptive_avg_pool2d = self._pool
        return False


def summarize_calls(calls):
    """Unique (op, caller, mode, align_corners) with the size pairs seen."""
    out = OrderedDict()
    for c in calls:
        key = (c["op"], c["caller"], c.get("mode"), c.get("align_corners"))
        out.setdefault(key, []).append(f"{tuple(c['in_hw'])}->{tuple(c['out_hw'])}")
    return [
        {"op": k[0], "caller": k[1], "mode": k[2], "align_corners": k[3], "sizes": v}
        for k, v in out.items()
    ]


def pattern(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


def norm_facts(model: nn.Module):
    """Per module-name pattern: class, eps, data_format (LayerNorm) / momentum (BatchNorm)."""
    groups = OrderedDict()
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            info = ("nn.LayerNorm", float(m.eps), "channels_last (normalises the last dim)")
        elif isinstance(m, ConvNextLayerNorm):
            fmt = m.data_format
            how = "F.layer_norm over the last dim" if fmt == "channels_last" else \
                "manual: u=mean_C, s=mean_C((x-u)^2) (biased), (x-u)/sqrt(s+eps), then w*x+b"
            info = ("ConvNextLayerNorm", float(m.eps), f"{fmt} ({how})")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            info = (type(m).__name__, float(m.eps),
                    f"eval: running stats (track_running_stats={m.track_running_stats}, affine={m.affine})")
        else:
            continue
        groups.setdefault((key_pattern(name),) + info, 0)
        groups[(key_pattern(name),) + info] += 1
    return [
        {"pattern": k[0], "class": k[1], "eps": k[2], "note": k[3], "count": n}
        for k, n in groups.items()
    ]


def gelu_variant(act) -> str:
    x = torch.linspace(-5, 5, 2001, dtype=torch.float64)
    y = act(x)
    erf = 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))
    tanh = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    de, dt = (y - erf).abs().max().item(), (y - tanh).abs().max().item()
    kind = "exact erf" if de < 1e-12 else ("tanh approximation" if dt < 1e-12 else "UNKNOWN")
    return f"{kind} ({type(act).__name__}; max|act-erf|={de:.1e}, max|act-tanh|={dt:.1e})"


def segformer_concat_order(model, x) -> str:
    """Which linear_c output lands in which channel block of linear_fuse's input."""
    head = model.decode_head
    outs, fused = {}, {}
    hooks = [mlp.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o))
             for k, mlp in enumerate(head.linear_c)]
    hooks.append(head.linear_fuse.register_forward_pre_hook(lambda m, i: fused.__setitem__("in", i[0])))
    with torch.inference_mode():
        model(pixel_values=x)
    for h in hooks:
        h.remove()
    d = model.config.decoder_hidden_size
    inp = fused["in"]
    b = inp.shape[0]
    blocks = []
    for pos in range(inp.shape[1] // d):
        blk = inp[:, pos * d:(pos + 1) * d]
        found = "?"
        for k, o in outs.items():  # o: (B, HW_k, d) -> (B, d, H_k, W_k), resized
            n = o.shape[1]
            # the stage whose token count matches the fused map needs no resize
            if n == blk.shape[2] * blk.shape[3]:
                o2 = o.permute(0, 2, 1).reshape(b, d, blk.shape[2], blk.shape[3])
                if torch.equal(o2, blk):
                    found = f"stage{k + 1}"
            else:
                # compare after the same bilinear resize the head does
                for (hh, ww) in _factor_pairs(n):
                    o2 = o.permute(0, 2, 1).reshape(b, d, hh, ww)
                    r = F.interpolate(o2, size=blk.shape[2:], mode="bilinear", align_corners=False)
                    if torch.equal(r, blk):
                        found = f"stage{k + 1}"
        blocks.append(found)
    return ", ".join(f"channels [{i * d}:{(i + 1) * d}] = {s}" for i, s in enumerate(blocks))


def _factor_pairs(n):
    return [(a, n // a) for a in range(1, n + 1) if n % a == 0]


# ---------------------------------------------------------------------------------------
# sensitivity: how far plausible reimplementation mistakes move the stored logits
# ---------------------------------------------------------------------------------------

class _Patch:
    """Temporarily replace an attribute (module function or object field)."""

    def __init__(self, obj, name, value):
        self.obj, self.name, self.value = obj, name, value

    def __enter__(self):
        self.old = getattr(self.obj, self.name)
        setattr(self.obj, self.name, self.value)

    def __exit__(self, *exc):
        setattr(self.obj, self.name, self.old)
        return False


def _mutations(model, kind):
    """(label, function(model copy) -> context manager or None) pairs."""
    import contextlib
    import transformers.activations as acts
    muts = []
    norm_types = (nn.LayerNorm, ConvNextLayerNorm, nn.modules.batchnorm._BatchNorm)
    groups = OrderedDict()
    for name, m in model.named_modules():
        if isinstance(m, norm_types) and not name.startswith("auxiliary_head."):
            groups.setdefault(key_pattern(name), []).append(name)
    for pat, names in groups.items():
        def f(mm, names=names):
            for n in names:
                mm.get_submodule(n).eps *= 10
        muts.append((f"eps x10 in {pat}", f))
    cfg_eps = model.config.layer_norm_eps if kind == "segformer" else model.config.backbone_config.layer_norm_eps

    def cfg_eps_f(mm):
        for m in mm.modules():
            if isinstance(m, (nn.LayerNorm, ConvNextLayerNorm)):
                m.eps = cfg_eps
    muts.append((f"every LayerNorm eps = config.layer_norm_eps ({cfg_eps:g})", cfg_eps_f))

    def tanh_gelu(mm):
        for m in mm.modules():
            if isinstance(m, acts.GELUActivation):
                m.act = lambda x: F.gelu(x, approximate="tanh")
    muts.append(("GELU tanh approximation", tanh_gelu))

    def align_true(mm):
        orig = F.interpolate

        def g(input, size=None, scale_factor=None, mode="nearest", align_corners=None, *a, **k):
            return orig(input, size, scale_factor, mode, True if mode == "bilinear" else align_corners, *a, **k)
        return _Patch(F, "interpolate", g)
    muts.append(("bilinear align_corners=True", align_true))

    if kind == "segformer":
        def no_reverse(mm):
            w = mm.decode_head.linear_fuse.weight
            d = mm.config.decoder_hidden_size
            with torch.no_grad():
                w.copy_(torch.cat(list(w.split(d, dim=1))[::-1], 1))
        muts.append(("decode-head concat in stage order (not reversed)", no_reverse))

        def sr_ceil(mm):
            for m in mm.modules():
                if getattr(m, "sr_ratio", 1) > 1:
                    conv, r = m.sr, m.sr_ratio

                    class Pad(nn.Module):
                        def __init__(self, c):
                            super().__init__()
                            self.c = c

                        def forward(self, x):
                            return self.c(F.pad(x, (0, (-x.shape[3]) % r, 0, (-x.shape[2]) % r)))
                    m.sr = Pad(conv)
        muts.append(("sr conv pads to a multiple of sr (ceil) instead of dropping", sr_ceil))
    else:
        def no_hs_norm(mm):
            for k in list(mm.backbone.hidden_states_norms):
                mm.backbone.hidden_states_norms[k] = nn.Identity()
        muts.append(("no backbone.hidden_states_norms", no_hs_norm))

        if any(getattr(m, "layer_scale_parameter", None) is not None for m in model.modules()):
            def ls_one(mm):
                for m in mm.modules():
                    if getattr(m, "layer_scale_parameter", None) is not None:
                        with torch.no_grad():
                            m.layer_scale_parameter.fill_(1.0)
            muts.append(("layer_scale_parameter ignored", ls_one))

        def cf_unbiased(mm):
            for m in mm.modules():
                if isinstance(m, ConvNextLayerNorm) and m.data_format == "channels_first":
                    def fwd(x, m=m):
                        u = x.mean(1, keepdim=True)
                        v = x.var(1, keepdim=True, unbiased=True)
                        return m.weight[:, None, None] * (x - u) / torch.sqrt(v + m.eps) + m.bias[:, None, None]
                    m.forward = fwd
        muts.append(("channels_first LayerNorm with unbiased variance", cf_unbiased))

        def psp_pool_bilinear(mm):
            def g(x, out):
                o = (out, out) if isinstance(out, int) else tuple(out)
                return F.interpolate(x, size=o, mode="bilinear", align_corners=False)
            return _Patch(F, "adaptive_avg_pool2d", g)
        muts.append(("PSP pooling replaced by bilinear resize", psp_pool_bilinear))
    return muts, contextlib


def sensitivity(model, kind, inputs_and_logits):
    """Max |logit diff| per mutation and input (reference = the stored logits)."""
    import copy
    muts, contextlib = _mutations(model, kind)
    rows = []
    for label, f in muts:
        mm = copy.deepcopy(model)
        ctx = f(mm) or contextlib.nullcontext()
        diffs = []
        with ctx, torch.inference_mode():
            for name, x, ref in inputs_and_logits:
                diffs.append(float((mm(pixel_values=x).logits - ref).abs().max()))
        rows.append({"mutation": label, "max_abs_diff": diffs})
    return rows


# ---------------------------------------------------------------------------------------
# file helpers
# ---------------------------------------------------------------------------------------

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def save_npy(path, arr):
    arr = np.ascontiguousarray(arr)
    np.save(path, arr, allow_pickle=False)


def write_text_atomic(path, text):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def replace_dir(tmp_dir, final_dir):
    """Swap a fully written directory into place."""
    os.chmod(tmp_dir, 0o755)
    for fn in os.listdir(tmp_dir):
        os.chmod(os.path.join(tmp_dir, fn), 0o644)
    old = None
    if os.path.exists(final_dir):
        old = final_dir + ".old-" + str(os.getpid())
        os.rename(final_dir, old)
    os.rename(tmp_dir, final_dir)
    if old:
        shutil.rmtree(old)


def keys_table(model, st_path):
    with safe_open(st_path, framework="pt") as f:
        file_keys = {k: f.get_slice(k) for k in f.keys()}
        meta = f.metadata()
        info = {k: (s.get_dtype(), list(s.get_shape())) for k, s in file_keys.items()}
    sd = model.state_dict()
    if set(info) != set(sd):
        raise SystemExit(f"state_dict / safetensors key mismatch: {set(info) ^ set(sd)}")
    lines = [f"{k}\t{info[k][0]}\t{tuple(info[k][1])}" for k in sd]
    return lines, meta, info


# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------

SEGFORMER_TINY = dict(
    num_channels=3, num_encoder_blocks=4, depths=[1, 2, 1, 1], sr_ratios=[8, 4, 2, 1],
    hidden_sizes=[8, 16, 24, 32], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
    num_attention_heads=[1, 2, 2, 4], mlp_ratios=[4, 4, 4, 4], decoder_hidden_size=16,
    num_labels=5,
)
# differently shaped: deeper first stage, equal hidden sizes across stage pairs, other
# heads / sr ratios / mlp ratios / decoder width / label count
SEGFORMER_TINY2 = dict(
    num_channels=3, num_encoder_blocks=4, depths=[2, 1, 1, 1], sr_ratios=[4, 2, 2, 1],
    hidden_sizes=[16, 16, 24, 24], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
    num_attention_heads=[2, 1, 3, 2], mlp_ratios=[2, 4, 3, 2], decoder_hidden_size=24,
    num_labels=3,
)
UPERNET_TINY = dict(
    backbone=dict(num_channels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1],
                  layer_scale_init_value=1e-6, drop_path_rate=0.0,
                  out_features=["stage1", "stage2", "stage3", "stage4"]),
    hidden_size=16, pool_scales=[1, 2, 3, 6], use_auxiliary_head=True,
    auxiliary_in_channels=24, auxiliary_channels=8, auxiliary_num_convs=1, num_labels=5,
)
# second UperNet: ConvNeXt patch_size 2 (stem k=2, s=2) so that stage 4 is 4x3 for a 72x56
# input and the PSP pools have overlapping bins (pool 3 on 4 rows: [0,2) [1,3) [2,4)); no
# auxiliary head, no layer scale (layer_scale_init_value 0), other widths / pool scales
UPERNET_P2 = dict(
    backbone=dict(num_channels=3, patch_size=2, hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                  layer_scale_init_value=0.0, drop_path_rate=0.0,
                  out_features=["stage1", "stage2", "stage3", "stage4"]),
    hidden_size=8, pool_scales=[1, 2, 3, 6], use_auxiliary_head=False, num_labels=4,
)

CASES = [
    # name, kind, config kwargs, weight seed, [(input name, shape, seed)], small stages
    ("segformer_tiny", "segformer", SEGFORMER_TINY, 11,
     [("input", (2, 3, 64, 64), 101), ("input_odd", (1, 3, 72, 56), 102)], [1]),
    ("segformer_tiny2", "segformer", SEGFORMER_TINY2, 12,
     [("input", (2, 3, 64, 64), 101), ("input_odd", (1, 3, 50, 70), 202)], [0]),
    ("upernet_convnext_tiny", "upernet", UPERNET_TINY, 13,
     [("input", (2, 3, 64, 64), 101), ("input_odd", (1, 3, 72, 56), 102)], [0, 1, 2, 3]),
    ("upernet_convnext_p2", "upernet", UPERNET_P2, 14,
     [("input", (1, 3, 72, 56), 102)], [0, 1, 2, 3]),
]


def build(kind, cfg):
    if kind == "segformer":
        return SegformerForSemanticSegmentation(segformer_config(**cfg))
    cfg = dict(cfg)
    backbone = cfg.pop("backbone")
    return UperNetForSemanticSegmentation(upernet_convnext_config(backbone, **cfg))


def load(kind, path):
    cls = SegformerForSemanticSegmentation if kind == "segformer" else UperNetForSemanticSegmentation
    return cls.from_pretrained(path).eval()


def aux_head(model, x):
    """UperNet's auxiliary head output before the upsampling (not part of .logits)."""
    feats = model.backbone(x).feature_maps
    return model.auxiliary_head(feats)


def make_case(out_root, name, kind, cfg, seed, inputs, small_stages):
    print(f"== {name}")
    torch.manual_seed(seed)
    model = build(kind, cfg)
    randomize_(model, seed)
    scaled = expose_norm_eps_(model, small_stages)
    tmp = tempfile.mkdtemp(dir=out_root, prefix=f".{name}.tmp-")
    model.save_pretrained(tmp, safe_serialization=True)
    files = sorted(os.listdir(tmp))
    if files != ["config.json", "model.safetensors"]:
        raise SystemExit(f"{name}: save_pretrained wrote {files}")
    st = os.path.join(tmp, "model.safetensors")
    lines, meta, info = keys_table(model, st)
    write_text_atomic(os.path.join(tmp, "keys.txt"),
                      f"# {name}: {len(lines)} tensors in model.safetensors (state_dict order)\n"
                      "# name\tdtype\tshape\n" + "\n".join(lines) + "\n")

    # reload from disk: the saved checkpoint must reproduce the in-memory logits bitwise
    reloaded = load(kind, tmp)
    case = {"kind": kind, "weight_seed": seed, "config": json.load(open(os.path.join(tmp, "config.json"))),
            "n_tensors": len(lines), "safetensors_metadata": meta,
            "non_f32_tensors": {k: v[0] for k, v in info.items() if v[0] != "F32"},
            "n_params": int(sum(p.numel() for p in model.parameters())),
            "small_stages": list(small_stages), "scaled_by_0.01": scaled, "files": {}}
    calls_by_input = {}
    stored = []
    for in_name, shape, in_seed in inputs:
        g = torch.Generator().manual_seed(in_seed)
        x = torch.randn(shape, generator=g, dtype=torch.float32)
        with torch.inference_mode(), CallRecorder() as rec:
            logits = model(pixel_values=x).logits
        with torch.inference_mode():
            logits2 = reloaded(pixel_values=x).logits
        if not torch.equal(logits, logits2):
            raise SystemExit(f"{name}/{in_name}: reloaded checkpoint gives different logits")
        calls_by_input[in_name] = rec.calls
        stored.append((in_name, x, logits.clone()))
        lg_name = "logits" + in_name[len("input"):]
        save_npy(os.path.join(tmp, in_name + ".npy"), x.numpy())
        save_npy(os.path.join(tmp, lg_name + ".npy"), logits.numpy())
        mx = float(logits.abs().max())
        print(f"   {in_name} {tuple(shape)} -> {lg_name} {tuple(logits.shape)}  max|logit| = {mx:.4f}"
              f"  std = {float(logits.std()):.4f}")
        case["files"][in_name + ".npy"] = {"shape": list(shape), "dtype": "float32", "seed": in_seed}
        case["files"][lg_name + ".npy"] = {"shape": list(logits.shape), "dtype": "float32",
                                            "max_abs": mx, "std": float(logits.std())}
        if kind == "upernet" and model.auxiliary_head is not None:
            with torch.inference_mode():
                a = aux_head(model, x)
            an = "aux_head" + in_name[len("input"):]
            save_npy(os.path.join(tmp, an + ".npy"), a.numpy())
            case["files"][an + ".npy"] = {"shape": list(a.shape), "dtype": "float32",
                                          "max_abs": float(a.abs().max())}
            print(f"   {in_name} -> {an} {tuple(a.shape)}  max|aux| = {float(a.abs().max()):.4f}")
    for fn in sorted(os.listdir(tmp)):
        case["files"].setdefault(fn, {})
        case["files"][fn]["bytes"] = os.path.getsize(os.path.join(tmp, fn))
        case["files"][fn]["sha256"] = sha256(os.path.join(tmp, fn))

    facts = {"norms": norm_facts(model),
             "config_layer_norm_eps": (model.config.layer_norm_eps if kind == "segformer"
                                       else model.config.backbone_config.layer_norm_eps),
             "calls": {k: summarize_calls(v) for k, v in calls_by_input.items()}}
    if kind == "segformer":
        facts["gelu"] = gelu_variant(model.segformer.encoder.block[0][0].mlp.intermediate_act_fn)
        facts["hidden_act"] = model.config.hidden_act
        g = torch.Generator().manual_seed(inputs[0][2])
        facts["concat_order"] = segformer_concat_order(model, torch.randn(inputs[0][1], generator=g))
        facts["reshape_last_stage"] = model.config.reshape_last_stage
    else:
        layer = model.backbone.encoder.stages[0].layers[0]
        facts["gelu"] = gelu_variant(layer.act)
        facts["hidden_act"] = model.config.backbone_config.hidden_act
        facts["backbone_stage_names"] = list(model.backbone.stage_names)
        facts["backbone_out_features"] = list(model.backbone.out_features)
        facts["backbone_channels"] = list(model.backbone.channels)
        if model.auxiliary_head is not None:
            facts["aux_in_index"] = model.auxiliary_head.in_index
            facts["aux_concat_input"] = model.auxiliary_head.concat_input
    case["facts"] = facts
    case["sensitivity"] = sensitivity(model, kind, stored)
    case["sensitivity_inputs"] = [n for n, _, _ in stored]
    replace_dir(tmp, os.path.join(out_root, name))
    return case, lines


def print_facts(name, case):
    f = case["facts"]
    print(f"-- facts {name}")
    for n in f["norms"]:
        print(f"   {n['class']:<18} eps={n['eps']:<8g} x{n['count']:<2} {n['pattern']}  [{n['note']}]")
    print(f"   config layer_norm_eps = {f['config_layer_norm_eps']} (see README: unused here)")
    print(f"   GELU: {f['gelu']}")
    for in_name, calls in f["calls"].items():
        for c in calls:
            extra = f" mode={c['mode']} align_corners={c['align_corners']}" if c["op"] == "interpolate" else ""
            print(f"   [{in_name}] {c['op']} by {c['caller']}{extra}: {' '.join(c['sizes'])}")
    if "concat_order" in f:
        print(f"   decode-head concat: {f['concat_order']}")
    for r in case["sensitivity"]:
        flag = "" if max(r["max_abs_diff"]) >= 1e-3 else "   <-- below 1e-3"
        print(f"   sensitivity {r['mutation']:<62} " + " ".join(f"{d:.1e}" for d in r["max_abs_diff"]) + flag)
    print(f"   non-F32 tensors in safetensors: {sorted(set(case['non_f32_tensors'].values())) or 'none'}"
          f" ({len(case['non_f32_tensors'])} tensors)")


# ---------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------

def norms_md(case):
    rows = ["| module pattern | class | eps | count | note |", "|---|---|---|---|---|"]
    for n in case["facts"]["norms"]:
        rows.append(f"| `{n['pattern']}` | {n['class']} | {n['eps']:g} | {n['count']} | {n['note']} |")
    return "\n".join(rows)


def calls_md(case):
    rows = []
    for in_name, calls in case["facts"]["calls"].items():
        for c in calls:
            extra = (f" mode=`{c['mode']}` align_corners=`{c['align_corners']}`"
                     if c["op"] == "interpolate" else "")
            rows.append(f"- `{in_name}`: `{c['op']}` in `{c['caller']}`{extra}: {', '.join(c['sizes'])}")
    return "\n".join(rows)


def key_pattern(name: str) -> str:
    """Collapse block / layer / stage indices, keep nn.Sequential positions that name
    different kinds of module (downsampling_layer.0 = LN, .1 = conv; psp_modules.*.1)."""
    parts = name.split(".")
    out = []
    for i, part in enumerate(parts):
        keep = part.isdigit() and i > 0 and (
            parts[i - 1] == "downsampling_layer" or (i > 1 and parts[i - 2] == "psp_modules"))
        out.append("*" if part.isdigit() and not keep else part)
    return ".".join(out)


def keys_md(lines):
    names = [l.split("\t")[0] for l in lines]
    pats = OrderedDict()
    for n in names:
        pats.setdefault(key_pattern(n), 0)
        pats[key_pattern(n)] += 1
    return "\n".join(f"    {p}  (x{c})" if c > 1 else f"    {p}" for p, c in pats.items())


def sens_md(cases):
    rows = ["| case | mutation | max abs logit diff per input |", "|---|---|---|"]
    for name, c in cases.items():
        for r in c["sensitivity"]:
            d = ", ".join(f"{n}: {v:.1e}" for n, v in zip(c["sensitivity_inputs"], r["max_abs_diff"]))
            rows.append(f"| {name} | {r['mutation']} | {d} |")
    return "\n".join(rows)


def file_table(name, case):
    rows = [f"| `{name}/{fn}` | {tuple(v['shape']) if 'shape' in v else ''} | {v.get('dtype', '')} "
            f"| {v['bytes']} | {('%.4f' % v['max_abs']) if 'max_abs' in v else ''} |"
            for fn, v in case["files"].items()]
    return "\n".join(rows)


def readme(cases, keys, total_bytes):
    seg, seg2, up = cases["segformer_tiny"], cases["segformer_tiny2"], cases["upernet_convnext_tiny"]
    sf, uf = seg["facts"], up["facts"]
    ft = "\n".join(file_table(n, c) for n, c in cases.items())
    return f"""# Model fixtures (tiny random SegFormer / UperNet-ConvNeXt)

Written by `scripts/make_model_fixtures.py`; rerunning gives identical files (CPU, one
thread, float32, fixed seeds). transformers {transformers.__version__}, torch {torch.__version__},
numpy {np.__version__}, safetensors (python) {_safetensors_version()}. No pretrained weights:
each model is built from its config and every parameter and buffer is overwritten with seeded
random values (normal(mean, std): conv/linear weight normal(0, 1/sqrt(fan_in)), bias
normal(0, 0.1); LayerNorm weight normal(1, 0.25), bias normal(0, 0.2); BatchNorm weight
normal(1, 0.25), bias and running_mean normal(0, 0.2), running_var uniform(0.5, 1.5);
ConvNeXt layer_scale_parameter uniform(0.25, 1)). Then, so that a wrong LayerNorm /
BatchNorm eps shows up well above float32 rounding (with O(1) activations eps 1e-5 vs 1e-6
moves the logits by ~1e-5 only), some tensors are scaled by 0.01 (`expose_norm_eps_`; list
per case in manifest.json `scaled_by_0.01`): the bias-free conv before every BatchNorm,
with running_mean x0.01 and running_var x1e-4 (the BN output is unchanged except that eps
weighs 1e4 times more), and whole residual streams of some stages (SegFormer stage 2 in
`segformer_tiny`, stage 1 in `segformer_tiny2`: patch proj + patch LN, sr conv,
attention.output.dense, mlp.dense2; every ConvNeXt stage: stem conv + stem LN or
downsampling conv, dwconv, layer_scale_parameter (pwconv2 where there is none)), so every
LayerNorm call site sees variances ~1e-4 somewhere. Changing any eps by 10x (or ConvNeXt's 1e-6 to config's 1e-12)
moves the logits by > 1e-3 (see the sensitivity table below). Finally `.eval()` and
`save_pretrained(dir, safe_serialization=True)`. Case directories: {total_bytes}.

## Files

Per case: `config.json` + `model.safetensors` (Hugging Face layout; load with
`*ForSemanticSegmentation.from_pretrained(dir)`), `keys.txt` (every tensor: name, dtype,
shape, in state_dict order), `input*.npy` (float32 NCHW, seeded standard normal) and
`logits*.npy` = `model(pixel_values=input).logits` (float32). For upernet_convnext_tiny also
`aux_head*.npy`: the auxiliary FCN head output at stage-3 resolution, before the bilinear
upsampling to the input size that transformers' forward() applies (the upsampled result only
enters the training loss; it is not part of `.logits`). All (2,3,64,64) inputs are the
same array (seed 101), as are all (1,3,72,56) ones (seed 102: `segformer_tiny/input_odd`,
`upernet_convnext_tiny/input_odd`, `upernet_convnext_p2/input`), so git stores each once.
`manifest.json` repeats all shapes, sha256 sums, max |logit| and the facts below.

| file | shape | dtype | bytes | max abs |
|---|---|---|---|---|
{ft}

Cases:
- `segformer_tiny`: depths [1,2,1,1], hidden [8,16,24,32], heads [1,2,2,4], sr [8,4,2,1],
  mlp ratios 4, patch [7,3,3,3] / strides [4,2,2,2], decoder 16, 5 labels. Logits at 1/4
  of the input (conv output size: floor((H + 2*(k//2) - k)/s) + 1 per stage, so 72x56 ->
  18x14). Odd input (1,3,72,56).
- `segformer_tiny2`: depths [2,1,1,1], hidden [16,16,24,24], heads [2,1,3,2] (head dims
  8,16,8,12), sr [4,2,2,1], mlp ratios [2,4,3,2], decoder 24, 3 labels,
  `reshape_last_stage` default (true). Odd input (1,3,50,70) -> logits 13x18.
- `upernet_convnext_tiny`: ConvNeXt hidden [8,16,24,32], depths [1,1,2,1], out_features
  stage1..4, UperNet hidden 16, pool scales [1,2,3,6], auxiliary head on (in 24, channels 8,
  1 conv, in_index 2 = stage3), 5 labels. Logits at input resolution. Odd input (1,3,72,56):
  the ConvNeXt stages are 18x14, 9x7, 4x3, 2x1, so the PSP pools 3 and 6 enlarge.
- `upernet_convnext_p2`: ConvNeXt `patch_size` 2 (stem conv k=2, s=2), hidden [8,8,16,16]
  (stage 2 keeps 8 channels but still has a downsampling layer: it is built when
  in != out or stride > 1), depths [1,1,1,1], `layer_scale_init_value` 0 (no
  `layer_scale_parameter` tensors), UperNet hidden 8, pool scales [1,2,3,6], NO auxiliary
  head (no `auxiliary_head.*` tensors), 4 labels. One input (1,3,72,56) (same array as the
  other 72x56 inputs): stages 36x28, 18x14, 9x7, 4x3, so the PSP pools have overlapping
  bins (pool 3 over 4 rows: [0,2), [1,3), [2,4); pool 2 over 3 columns: [0,2), [1,3)) and
  the FPN resizes 4x3 -> 9x7 -> 18x14 -> 36x28, final 36x28 -> 72x56.

## Facts (read off the instantiated modules / an instrumented forward)

### LayerNorm / BatchNorm eps

SegFormer (`segformer_tiny`; `segformer_tiny2` identical):

{norms_md(seg)}

config.json says `layer_norm_eps: {sf['config_layer_norm_eps']}` but SegFormer never reads it:
every LayerNorm is a default `nn.LayerNorm` (eps 1e-5).

UperNet / ConvNeXt:

{norms_md(up)}

The ConvNeXt backbone config has `layer_norm_eps: {uf['config_layer_norm_eps']}`, also unused by the
backbone (it is only used by ConvNextModel's pooled-output LayerNorm, which the backbone
does not have): every ConvNeXt norm uses the hard-coded default eps 1e-6.
BatchNorm (SegFormer decode head, every UperNet ConvModule) uses the PyTorch default 1e-5
with running statistics (eval mode).

### GELU
- SegFormer Mix-FFN (`hidden_act` = `{sf['hidden_act']}`): {sf['gelu']}
- ConvNeXt block (`hidden_act` = `{uf['hidden_act']}`): {uf['gelu']}

### Interpolation / pooling calls (instrumented forward)
SegFormer `segformer_tiny`:
{calls_md(seg)}

SegFormer `segformer_tiny2`:
{calls_md(seg2)}

UperNet `upernet_convnext_tiny`:
{calls_md(up)}

UperNet `upernet_convnext_p2` (overlapping PSP bins):
{calls_md(cases["upernet_convnext_p2"])}

All bilinear calls use `align_corners=False` with an explicit output `size` (no
scale_factor), i.e. PyTorch's half-pixel rule with scale = in/out:
src = max((dst + 0.5) * in/out - 0.5, 0), neighbours clamped to in-1. PSP pooling is
`nn.AdaptiveAvgPool2d(scale)`: bin i covers [floor(i*in/out), ceil((i+1)*in/out)).

### SegFormer decode-head concatenation
`linear_fuse` input: {sf['concat_order']} -- the stage list is reversed
(`torch.cat(all_hidden_states[::-1])`), so `linear_fuse.weight[:, 0:D]` multiplies stage 4.
Stage 1 is also passed through `interpolate` (to its own size, an exact identity).

### UperNet / ConvNeXt
- backbone stage names {uf['backbone_stage_names']}, out_features {uf['backbone_out_features']},
  channels {uf['backbone_channels']}; feature maps = outputs of stages 1..4, each through
  `backbone.hidden_states_norms.<stage>` (channels_first LayerNorm, eps 1e-6).
- auxiliary head reads feature index {uf['aux_in_index']} (stage3), concat_input
  {uf['aux_concat_input']}.

## State-dict keys (digits collapsed to `*`; full lists with shapes in `<case>/keys.txt`)

`segformer_tiny` ({seg['n_tensors']} tensors):

{keys_md(keys['segformer_tiny'])}

`upernet_convnext_tiny` ({up['n_tensors']} tensors):

{keys_md(keys['upernet_convnext_tiny'])}

`num_batches_tracked` buffers are stored as I64 scalars (shape ()) in model.safetensors;
every other tensor is F32. A loader must skip or accept them.

## Things a reimplementation must match
{SURPRISES}
## Sensitivity (how far plausible mistakes move the stored logits)

Each row re-runs the model with one deliberate change; the logits are O(1) (max |logit|
in the file table). A Rust/torch comparison with tolerance ~1e-5 catches every row; the
smallest differences are those of the tanh GELU (~2e-4) and of the PSP-pooling row, which
only the overlapping-bin case `upernet_convnext_p2` detects well.

{sens_md(cases)}
"""


SURPRISES = """- SegFormer LayerNorm eps is 1e-5 (nn.LayerNorm default) everywhere, not config's
  `layer_norm_eps` (1e-6); ConvNeXt norms are 1e-6 everywhere, not config's 1e-12.
- SegFormer attention: q from the full token sequence; k, v from the sequence reduced by
  `attention.self.sr` (Conv2d kernel = stride = sr_ratio, no padding, so floor(H/sr) x
  floor(W/sr): non-divisible sizes drop the remainder rows/cols), flattened and passed
  through `attention.self.layer_norm`; scores = q k^T / sqrt(head_dim), softmax, then
  `attention.output.dense` (no residual inside; the residual is added in the layer).
  sr_ratio 1 has no `sr` / `layer_norm` keys.
- SegFormer layer: x = x + attn(LN1(x)); x = x + dense2(GELU(dwconv3x3(dense1(LN2(x))))),
  GELU after the depthwise conv; tokens are row-major (h*W + w). After each stage the
  per-stage `encoder.layer_norm.<i>` is applied, then tokens are reshaped to NCHW.
- Patch embedding: Conv2d(kernel k, stride s, padding k//2) then LayerNorm over channels.
- Decode head: each stage -> Linear(C_i -> D) per token, NCHW, bilinear (align_corners
  False) to the stage-1 size, concat in REVERSED order (stage4 first), 1x1 conv without
  bias, BatchNorm (eps 1e-5), ReLU, 1x1 classifier with bias. Logits stay at 1/4 input
  resolution (SegFormer does not upsample them in forward()).
- ConvNeXt: stem Conv2d(k=4, s=4, no padding) + channels_first LN; stage 1 has no
  downsampling layer (no `stages.0.downsampling_layer` keys); stages 2..4 downsample with
  LN(channels_first) then Conv2d(k=2, s=2) (`downsampling_layer.0` = LN, `.1` = conv).
  Block: dwconv 7x7 pad 3 -> LN (channels_last) -> pwconv1 Linear(C->4C) -> GELU(erf) ->
  pwconv2 -> * layer_scale_parameter -> residual. `pwconv*` are nn.Linear (weight (out, in)),
  not 1x1 convs.
- UperNet ConvModule = Conv2d(bias=False) + BatchNorm2d + ReLU. PSP: for each pool scale,
  AdaptiveAvgPool2d(scale) -> 1x1 ConvModule -> bilinear back; concat [x, psp1, psp2, ...]
  (input first, then scales in order) -> 3x3 bottleneck. FPN: laterals (1x1) for stages
  1..3 + PSP output as level 4; top-down: lateral[i-1] += bilinear(lateral[i]); 3x3
  fpn_convs on levels 1..3 (level 4 is NOT passed through an fpn conv); upsample levels 2..4
  to level 1 size, concat in level order 1..4, 3x3 fpn_bottleneck, 1x1 classifier (bias).
  Final logits: bilinear to the input size.
- The auxiliary head (and its weights in the checkpoint) does not affect `.logits`.
- AdaptiveAvgPool2d also enlarges (PSP scale 6 on a 2x2 or 4x3 map): bins are
  [floor(i*in/out), ceil((i+1)*in/out)), so each output cell copies or averages input
  cells; bins of neighbouring cells overlap when in/out is not an integer.
- Every bilinear call passes an explicit `size`; PyTorch then uses scale = in/out (not
  the reciprocal of a user scale factor), half-pixel centres, source clamped at 0.
- config.json fields a loader must read rather than assume: SegFormer `depths`,
  `hidden_sizes`, `num_attention_heads`, `sr_ratios`, `mlp_ratios` (hidden =
  int(C * ratio)), `patch_sizes`, `strides`, `decoder_hidden_size`, `num_labels`;
  UperNet `backbone_config.{patch_size, hidden_sizes, depths, layer_scale_init_value
  (0 -> no layer_scale_parameter)}`, `hidden_size`, `pool_scales`, `use_auxiliary_head`,
  `auxiliary_*`, `num_labels`. Labels count = len(id2label) = num_labels.
"""


def _safetensors_version():
    try:
        import safetensors
        return safetensors.__version__
    except Exception:  # pragma: no cover
        return "?"


def tree_bytes(root):
    total = 0
    for d, _, fs in os.walk(root):
        for f in fs:
            total += os.path.getsize(os.path.join(d, f))
    return total


def unique_bytes(*roots):
    seen = {}
    for root in roots:
        for d, _, fs in os.walk(root):
            for f in fs:
                p = os.path.join(d, f)
                seen[sha256(p)] = os.path.getsize(p)
    return sum(seen.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    cases, keys = OrderedDict(), {}
    for name, kind, cfg, seed, inputs, small_stages in CASES:
        case, lines = make_case(out, name, kind, cfg, seed, inputs, small_stages)
        cases[name] = case
        keys[name] = lines
        print_facts(name, case)

    total = (f"{sum(tree_bytes(os.path.join(out, n)) for n in cases)} bytes on disk, "
             f"{unique_bytes(*[os.path.join(out, n) for n in cases])} in distinct files")
    manifest = {
        "generator": "scripts/make_model_fixtures.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "safetensors": _safetensors_version()},
        "cases": cases,
    }
    write_text_atomic(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    text = readme(cases, keys, total)
    write_text_atomic(os.path.join(out, "README.md"), text)
    total = tree_bytes(out)
    print(f"total fixture size: {total} bytes on disk, {unique_bytes(out)} bytes in distinct files")
    if total > SIZE_LIMIT:
        raise SystemExit(f"fixtures too large: {total} > {SIZE_LIMIT}")


if __name__ == "__main__":
    main()
