#!/usr/bin/python3
"""Writes tests/fixtures/quant/nf4.safetensors for tests/spec/quant_spec.lua: weight matrices,
their NF4 and int8 quantisations (indices / values, scales) and dequantised values.

NF4 follows bitsandbytes (the kernels QLoRA, Dettmers et al. 2023, ships): the 16 levels are the
float32 constants of bitsandbytes' csrc/kernels.cu (nf4_dequantization_lut; also
bitsandbytes.functional.get_4bit_type("nf4")), checked here against the paper's construction
(create_normal_map: quantiles of N(0, 1) at offset 0.9677083, 8 positive and 7 negative, plus 0,
normalised by the largest). The weight, flattened row-major, is cut into blocks of 64; a block is
multiplied by the float32 reciprocal of its absmax (kQuantizeBlockwise), and a value becomes the
number of thresholds of dQuantizeNF4's decision tree (the float32 midpoints between neighbouring
levels) that lie strictly below it (the tree's strict '>'); a NaN (a zero block: 0 * inf) gets index 0 as every '>'
is false. Dequantised: level[index] * absmax, one float32 product.

int8: per output row scale = float32(absmax / 127), value = rint(w / scale) in [-127, 127]
(round half to even), dequantised value * scale; a zero row has scale 0 and values 0.

Written independently of the C core with NumPy and PyTorch (float32 arithmetic throughout).
Run: /usr/bin/python3 tests/gen/quant.py   (needs numpy and torch)
"""
import json
from decimal import Decimal
from fractions import Fraction
import os
import struct

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "quant")

NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float64)
LEVELS = NF4.astype(np.float32)
# dQuantizeNF4's thresholds, the float32 literals of its decision tree in ascending order. A C or
# CUDA compiler rounds each decimal straight to the nearest float32; rounding it to double first
# (np.float32(0.848...)) can land on a float32 tie and round the other way (it does for the
# first one), so they are rounded here from the exact decimal.
TREE = ["-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
        "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
        "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
        "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"]


def float32_of_decimal(text):
    """The float32 nearest to a decimal string (ties to even), as a C compiler parses 1.5f."""
    exact = Fraction(Decimal(text))
    f = np.float32(float(exact))
    below = f if Fraction(float(f)) <= exact else np.nextafter(f, np.float32(-np.inf))
    above = np.nextafter(below, np.float32(np.inf))
    db, da = exact - Fraction(float(below)), Fraction(float(above)) - exact
    if db != da:
        return below if db < da else above
    return below if (below.view(np.uint32) & 1) == 0 else above


MIDPOINTS = np.array([float32_of_decimal(t) for t in TREE], dtype=np.float32)
BLOCK = 64


def normal_map(offset=0.9677083):
    """QLoRA's NF4 construction (bitsandbytes create_normal_map, use_extra_value=True)."""
    icdf = torch.distributions.Normal(0.0, 1.0).icdf
    pos = icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1]).tolist()
    neg = (-icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])).tolist()
    v = np.array(sorted(pos + [0.0] + neg))
    return v / v.max()


def check_levels():
    derived = normal_map()
    err = np.abs(derived - NF4).max()
    assert err < 1e-6, err
    # the tree's thresholds are the midpoints between neighbouring levels (to within one float32 ulp)
    mid = (NF4[:-1] + NF4[1:]) / 2
    assert np.all(np.abs(MIDPOINTS.astype(np.float64) - mid) <= np.spacing(np.abs(mid).astype(np.float32)))


def nf4_quantize(w):
    flat = torch.from_numpy(w.reshape(-1).astype(np.float32))
    n = flat.numel()
    nblocks = (n + BLOCK - 1) // BLOCK
    padded = torch.zeros(nblocks * BLOCK, dtype=torch.float32)
    padded[:n] = flat
    blocks = padded.view(nblocks, BLOCK)
    # absmax over the valid elements (padding zeros do not change it)
    absmax = blocks.abs().amax(dim=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (torch.ones_like(absmax) / absmax)                 # float32 reciprocal
        scaled = (blocks * inv[:, None]).reshape(-1)[:n].numpy()  # float32 products
        idx = np.searchsorted(MIDPOINTS, scaled, side="left")    # midpoints strictly below
    idx[np.isnan(scaled)] = 0
    # cross-check against nearest-level search wherever no midpoint is within rounding
    ok = ~np.isnan(scaled)
    near = np.abs(scaled[ok, None].astype(np.float64) - NF4[None, :]).argmin(axis=1)
    dist = np.abs(scaled[ok, None].astype(np.float64) - MIDPOINTS[None, :].astype(np.float64)).min(axis=1)
    assert np.all((near == idx[ok]) | (dist < 1e-6))
    absmax = absmax.numpy()
    deq = (LEVELS[idx] * absmax[np.arange(n) // BLOCK]).astype(np.float32)
    return idx.reshape(w.shape).astype(np.int64), absmax.astype(np.float32), deq.reshape(w.shape)


def int8_quantize(w):
    t = torch.from_numpy(w.astype(np.float32))
    absmax = t.abs().amax(dim=1)
    scale = absmax / torch.tensor(127.0, dtype=torch.float32)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(t / safe[:, None]).clamp(-127, 127)          # torch.round: half to even
    q = torch.where(scale[:, None] > 0, q, torch.zeros_like(q)).to(torch.int8)   # as stored: no -0
    deq = q.to(torch.float32) * scale[:, None]
    return q.numpy().astype(np.int64), scale.numpy(), deq.numpy().astype(np.float32)


def matrices():
    g = torch.Generator().manual_seed(1234)
    out = {}
    out["gauss"] = (torch.randn(16, 64, generator=g) * 0.02).numpy()        # a typical weight
    out["odd"] = (torch.randn(7, 37, generator=g)).numpy()                  # blocks across rows, partial last
    # edge cases: a zero block (row 0), exact levels and exact midpoints with absmax 1,
    # a row with one large outlier
    e = np.zeros((4, 64), dtype=np.float32)
    e[1, :16] = LEVELS
    e[1, 16:31] = MIDPOINTS
    e[1, 31:46] = np.nextafter(MIDPOINTS, np.float32(2))
    e[1, 46:61] = np.nextafter(MIDPOINTS, np.float32(-2))
    e[2] = (torch.randn(64, generator=g) * 0.1).numpy()
    e[2, 5] = 3.0
    e[3] = np.linspace(-0.5, 0.25, 64, dtype=np.float32)
    out["edges"] = e
    out["wide"] = (torch.randn(3, 300, generator=g) * 0.05).numpy()
    return out


def f32(a): return ("F32", a.astype("<f4"))
def i64(a): return ("I64", a.astype("<i8"))


def save(path, tensors):
    header, data = {}, b""
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    os.replace(tmp, path)


def main():
    check_levels()
    tensors = {"levels": f32(LEVELS), "midpoints": f32(MIDPOINTS)}
    for name, w in matrices().items():
        w = w.astype(np.float32)
        codes, absmax, deq = nf4_quantize(w)
        qi, scale, deqi = int8_quantize(w)
        tensors[name + ".w"] = f32(w)
        tensors[name + ".nf4_codes"] = i64(codes)
        tensors[name + ".nf4_absmax"] = f32(absmax)
        tensors[name + ".nf4_deq"] = f32(deq)
        tensors[name + ".int8_codes"] = i64(qi)
        tensors[name + ".int8_scale"] = f32(scale)
        tensors[name + ".int8_deq"] = f32(deqi)
    os.makedirs(OUT, exist_ok=True)
    save(os.path.join(OUT, "nf4.safetensors"), tensors)
    print("wrote", os.path.join(OUT, "nf4.safetensors"), len(tensors), "tensors")


if __name__ == "__main__":
    main()
