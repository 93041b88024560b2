#!/usr/bin/python3
"""Reference values for the transformer ops (rms_norm, rope, scaled dot-product attention),
computed with PyTorch.

Run with Debian's python3-torch (1.13) and python3-h5py:

    /usr/bin/python3 tests/gen/transformer.py   # writes tests/fixtures/transformer.h5

torch 1.13 has none of these ops, so each is written out as its reference defines it:
rms_norm as HuggingFace's LlamaRMSNorm, rope as HuggingFace's apply_rotary_pos_emb with
rotate_half, attention as softmax(q k^T * scale + mask) v with grouped-query heads by
repeat_interleave of k and v.

Each case is an HDF5 group ops/<case> of plain datasets (the layout of ops.h5):

    <input>         float32 inputs, int64 0/1 masks
    g               a fixed random tensor of the output's shape
    out             the op's output
    grad_<input>    d sum(out * g) / d input, for every input that is differentiated

Inputs whose name ends in "_bthd" hold [B,T,H,D] and the op receives their [B,H,T,D]
transpose (non-contiguous operands); their gradients are with respect to the stored tensor.
Inputs are drawn in float32; the reference runs in float64 on those exact values and is
stored as float32.
"""
import math
import os

import h5py
import numpy as np
import torch

torch.manual_seed(2024)
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "transformer.h5")

CASES = {}


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def record(name, inputs, fn, nograd=()):
    """Runs fn on float64 copies of the inputs; stores inputs, g, out and the gradients."""
    assert name not in CASES, name
    data = dict(inputs)
    args, leaves = {}, {}
    for k, v in inputs.items():
        if v.dtype == torch.float32:
            leaf = v.double()
            if k not in nograd:
                leaf.requires_grad_(True)
                leaves[k] = leaf
            args[k] = leaf.transpose(1, 2) if k.endswith("_bthd") else leaf
        else:
            args[k] = v
    out = fn(args)
    g = torch.randn(out.shape, dtype=torch.float32)
    data["out"] = out.detach().float()
    data["g"] = g
    grads = torch.autograd.grad((out * g.double()).sum(), list(leaves.values()))
    for k, gr in zip(leaves, grads):
        data["grad_" + k] = gr.float()
    CASES[name] = data


# ---- rms_norm: HuggingFace's LlamaRMSNorm ------------------------------------------------

def rms_norm(x, weight, eps, dims=(-1,)):
    variance = x.pow(2).mean(dims, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return x if weight is None else weight * x


record("rms_norm", {"x": randn(2, 5, 32), "weight": randn(32)},
       lambda a: rms_norm(a["x"], a["weight"], 1e-6))
record("rms_norm_noweight", {"x": randn(3, 16) * 3 + 1},
       lambda a: rms_norm(a["x"], None, 1e-5))
record("rms_norm_2d", {"x": randn(3, 4, 6), "weight": randn(4, 6)},
       lambda a: rms_norm(a["x"], a["weight"], 1e-6, dims=(-2, -1)))


# ---- rope: HuggingFace's rotate_half / apply_rotary_pos_emb --------------------------------

def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(x, cos, sin):
    return (x * cos) + (rotate_half(x) * sin)


def rope_tables(positions, dim, theta=10000.0):
    """cos, sin [T, dim] in float32 as LlamaRotaryEmbedding (default rope type)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.outer(positions.float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


cos, sin = rope_tables(torch.arange(7), 16)
record("rope", {"x": randn(2, 3, 7, 16), "cos": cos, "sin": sin},
       lambda a: apply_rotary_pos_emb(a["x"], a["cos"], a["sin"]), nograd=("cos", "sin"))
# positions 5..8, as for 4 new tokens after a KV cache of 5; x given as [B,T,H,D]
cos, sin = rope_tables(torch.arange(5, 9), 16, theta=500000.0)
record("rope_strided", {"x_bthd": randn(2, 4, 3, 16), "cos": cos, "sin": sin},
       lambda a: apply_rotary_pos_emb(a["x_bthd"], a["cos"], a["sin"]), nograd=("cos", "sin"))


# ---- scaled dot-product attention ------------------------------------------------------------

def attention(q, k, v, mask=None, causal=None, scale=None):
    """softmax(q k^T * scale + mask) v. causal: None, "lower_right" (query t sees keys
    s <= t + S - T) or "upper_left" (s <= t, torch's is_causal). mask: float (added) or
    int64 0/1 (0 hides a key). A row that sees no key gives zeros."""
    if q.dim() == 4 and k.shape[1] != q.shape[1]:
        group = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    T, S = q.shape[-2], k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-2, -1) * scale
    allowed = torch.ones(T, S, dtype=torch.bool)
    if causal == "lower_right":
        allowed = allowed.tril(S - T)
    elif causal == "upper_left":
        allowed = allowed.tril(0)
    if mask is not None and mask.dtype == torch.int64:
        allowed = allowed & (mask != 0)
    elif mask is not None:
        scores = scores + mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    sees = (scores > float("-inf")).any(-1, keepdim=True)
    scores = scores.masked_fill(~sees, 0.0)   # keeps those rows finite (torch would give NaN)
    return (torch.softmax(scores, -1) * sees) @ v


record("sdpa_causal", {"q": randn(2, 4, 9, 16), "k": randn(2, 4, 9, 16), "v": randn(2, 4, 9, 16)},
       lambda a: attention(a["q"], a["k"], a["v"], causal="lower_right"))
# grouped-query (3 query heads per kv head) after a KV cache of 7 positions
record("sdpa_gqa_cache", {"q": randn(2, 6, 3, 8), "k": randn(2, 2, 10, 8), "v": randn(2, 2, 10, 8)},
       lambda a: attention(a["q"], a["k"], a["v"], causal="lower_right"))
# additive key-padding mask [B,1,1,S] (-inf on padding) plus a float bias, Dv != D, scale given
fmask = randn(2, 1, 1, 6) * 0.5
fmask[1, 0, 0, 4:] = float("-inf")
record("sdpa_float_mask", {"q": randn(2, 4, 6, 8), "k": randn(2, 4, 6, 8), "v": randn(2, 4, 6, 5),
                           "mask": fmask},
       lambda a: attention(a["q"], a["k"], a["v"], mask=a["mask"], scale=0.25), nograd=("mask",))
# int64 0/1 mask [B,Hq,T,S] with GQA; one row hidden entirely
bmask = (torch.rand(1, 4, 5, 7) > 0.3).long()
bmask[0, 2, 3, :] = 0
record("sdpa_bool_mask", {"q": randn(1, 4, 5, 8), "k": randn(1, 2, 7, 8), "v": randn(1, 2, 7, 8),
                          "mask": bmask},
       lambda a: attention(a["q"], a["k"], a["v"], mask=a["mask"]))
# q, k, v as the [B,H,T,D] transposes of [B,T,H,D] projections, GQA, causal
record("sdpa_strided", {"q_bthd": randn(2, 5, 4, 8), "k_bthd": randn(2, 5, 2, 8),
                        "v_bthd": randn(2, 5, 2, 8)},
       lambda a: attention(a["q_bthd"], a["k_bthd"], a["v_bthd"], causal="lower_right"))
# 3-D inputs with torch's top-left causal alignment and fewer queries than keys
record("sdpa_3d_upper_left", {"q": randn(3, 5, 8), "k": randn(3, 7, 8), "v": randn(3, 7, 4)},
       lambda a: attention(a["q"], a["k"], a["v"], causal="upper_left"))
# more rows than one kernel block (64)
record("sdpa_long", {"q": randn(1, 2, 70, 8), "k": randn(1, 2, 70, 8), "v": randn(1, 2, 70, 8)},
       lambda a: attention(a["q"], a["k"], a["v"], causal="lower_right"))


def main():
    tmp = OUT + ".tmp"
    with h5py.File(tmp, "w") as f:
        for case, data in CASES.items():
            for k, v in data.items():
                arr = v.numpy()
                assert arr.dtype in (np.float32, np.int64), (case, k, arr.dtype)
                f.create_dataset("ops/%s/%s" % (case, k), data=arr)
    os.replace(tmp, OUT)
    print("wrote %d cases to %s (%d bytes)" % (len(CASES), OUT, os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
