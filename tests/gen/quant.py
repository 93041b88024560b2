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

Double quantisation (QLoRA; bitsandbytes quantize_4bit with compress_statistics=True, the "nf4"
kind; "nf4_fp32" keeps the float32 absmaxes above): offset = mean of the float32 absmaxes (here
a sequential double sum, rounded once to float32: torch's float32 mean depends on its reduction
order), then absmax - offset (float32) by bitsandbytes' quantize_blockwise in blocks of 256 with
the signed dynamic map (bitsandbytes/functional.py create_dynamic_map(signed=True): for i = 0..6
the float32 midpoints of torch.linspace(0.1, 1, 2^i + 1) times 10^(i-6), both signs, plus 0 and
1, sorted): absmax2 = max |x| per block, x * float32(1 / absmax2) to the code of
csrc/kernels.cu dQuantize<0> (a 7-step binary search from pivot 127, then the nearer neighbour
by the float32 midpoint, a value on the midpoint keeping the searched pivot; NaN -> code 0).
Dequantised: absmax = float32(map[code] * absmax2) + offset (two float32 roundings), then
level[index] * absmax.

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
    return float32_of_fraction(Fraction(Decimal(text)))


def float32_of_fraction(exact):
    """The float32 nearest to an exact rational (ties to even)."""
    f = np.float32(float(exact))
    below = f if Fraction(float(f)) <= exact else np.nextafter(f, np.float32(-np.inf))
    above = np.nextafter(below, np.float32(np.inf))
    db, da = exact - Fraction(float(below)), Fraction(float(above)) - exact
    if db != da:
        return below if db < da else above
    return below if (below.view(np.uint32) & 1) == 0 else above


MIDPOINTS = np.array([float32_of_decimal(t) for t in TREE], dtype=np.float32)
BLOCK = 64
BLOCK2 = 256


def fma_f32(a, b, c):
    """float32 fused multiply-add: a * b + c rounded once."""
    return float32_of_fraction(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def linspace_f32(start, end, steps, width=8):
    """torch.linspace(start, end, steps, dtype=float32) as PyTorch's x86-64 CPU kernel computes it
    (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp, AVX2 dispatch): step = (end - start) /
    (steps - 1) in float32; element i of the first half start + step * i, of the second half
    end - step * (steps - 1 - i), each one fused multiply-add (the AVX2 kernels are built with
    FMA contraction); the loop runs two vectors of 8 at a time while 16 remain, each vector
    from such a base at its first element plus k * step (unfused) for lane k; the rest one by
    one. Checked below against this machine's torch.linspace."""
    start, end = np.float32(start), np.float32(end)
    step = np.float32((end - start) / np.float32(steps - 1))
    half = steps // 2

    def at(i):
        return fma_f32(step, np.float32(i), start) if i < half else fma_f32(-step, np.float32(steps - 1 - i), end)
    out = np.zeros(steps, dtype=np.float32)
    i = 0
    while i <= steps - 2 * width:
        for _ in range(2):
            base = at(i)
            for k in range(width):
                out[i + k] = np.float32(base + np.float32(np.float32(k) * step))
            i += width
    while i < steps:
        out[i] = at(i)
        i += 1
    return out


def dynamic_map_numpy():
    data = []
    for i in range(7):
        b = linspace_f32(0.1, 1.0, 2 ** i + 1)
        means = ((b[:-1] + b[1:]) / np.float32(2)).astype(np.float32)
        sc = np.float32(10.0 ** (i - 6))
        data += list((sc * means).astype(np.float32)) + list((-sc * means).astype(np.float32))
    data += [np.float32(0), np.float32(1)]
    assert len(data) == 256
    return np.sort(np.array(data, dtype=np.float32))


def dynamic_map_torch():
    """bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) with torch."""
    data = []
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(7 - 1) + i)) * means).tolist()
        data += (-(10 ** (-(7 - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    data.sort()
    return torch.tensor(data, dtype=torch.float32).numpy()


DYN = dynamic_map_numpy()


def dquantize(code, x):
    """csrc/kernels.cu dQuantize<0>, vectorised over x (float32)."""
    x = x.astype(np.float32)
    n = x.shape[0]
    pivot = np.full(n, 127)
    upper_pivot = np.full(n, 255)
    lower_pivot = np.zeros(n, dtype=np.int64)
    lower = np.full(n, -1.0, dtype=np.float32)
    upper = np.full(n, 1.0, dtype=np.float32)
    val = code[pivot]
    i = 64
    while i > 0:
        gt = x > val
        lower_pivot = np.where(gt, pivot, lower_pivot)
        lower = np.where(gt, val, lower)
        upper_pivot = np.where(gt, upper_pivot, pivot)
        upper = np.where(gt, upper, val)
        pivot = np.where(gt, pivot + i, pivot - i)
        val = code[pivot]
        i >>= 1
    upper = np.where(upper_pivot == 255, code[255], upper).astype(np.float32)
    lower = np.where(lower_pivot == 0, code[0], lower).astype(np.float32)
    gt = x > val
    mid_up = ((upper + val) * np.float32(0.5)).astype(np.float32)
    mid_lo = ((lower + val) * np.float32(0.5)).astype(np.float32)
    out = np.where(gt, np.where(x > mid_up, upper_pivot, pivot), np.where(x < mid_lo, lower_pivot, pivot))
    return out.astype(np.int64)


def double_quantize(absmax):
    n = absmax.shape[0]
    s = 0.0
    for a in absmax.tolist():      # sequential double sum, as the C core
        s += a
    offset = np.float32(s / n)
    tm = torch.from_numpy(absmax).mean().item()
    assert abs(tm - float(offset)) <= 4 * np.spacing(offset), (tm, offset)
    x = (absmax - offset).astype(np.float32)
    nb = (n + BLOCK2 - 1) // BLOCK2
    absmax2 = np.zeros(nb, dtype=np.float32)
    codes = np.zeros(n, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in range(nb):
            xb = x[b * BLOCK2:(b + 1) * BLOCK2]
            m = np.float32(np.abs(xb).max())
            absmax2[b] = m
            inv = np.float32(1) / m
            codes[b * BLOCK2:(b + 1) * BLOCK2] = dquantize(DYN, (xb * inv).astype(np.float32))
    prod = (DYN[codes] * absmax2[np.arange(n) // BLOCK2]).astype(np.float32)
    deq_absmax = (prod + offset).astype(np.float32)
    return codes, offset, absmax2, deq_absmax


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
    # 256 blocks whose absmaxes climb 0, 1/64, ..., 255/64 (block 0 all zero)
    lad = (torch.rand(256, 64, generator=g) * 2 - 1).numpy()
    lad = lad / np.abs(lad).max(axis=1, keepdims=True) * (np.arange(256, dtype=np.float32)[:, None] / 64)
    lad[0] = 0
    out["ladder"] = lad.astype(np.float32).reshape(64, 256)
    # 300 blocks: two blocks of absmaxes, the second partial
    out["big"] = (torch.randn(24, 800, generator=g) * 0.02).numpy()
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
    for n in (2, 3, 5, 9, 17, 33, 65):
        t = torch.linspace(0.1, 1, n, dtype=torch.float32).numpy()
        if t.view(np.uint32).tolist() != linspace_f32(0.1, 1.0, n).view(np.uint32).tolist():
            print("warning: this torch's linspace (CPU capability %s) differs from the AVX2 kernel's;"
                  " the map is the AVX2 one" % os.environ.get("ATEN_CPU_CAPABILITY", "default"))
            break
    else:
        tm = dynamic_map_torch()
        assert tm.view(np.uint32).tolist() == DYN.view(np.uint32).tolist()
    assert DYN[127] == 0 and DYN[255] == 1 and len(np.unique(DYN)) == 256
    tensors = {"levels": f32(LEVELS), "midpoints": f32(MIDPOINTS), "dynamic_map": f32(DYN)}
    for name, w in matrices().items():
        w = w.astype(np.float32)
        codes, absmax, deq = nf4_quantize(w)
        qi, scale, deqi = int8_quantize(w)
        tensors[name + ".w"] = f32(w)
        tensors[name + ".nf4_codes"] = i64(codes)
        tensors[name + ".nf4_absmax"] = f32(absmax)
        tensors[name + ".nf4_deq"] = f32(deq)
        dq_codes, offset, absmax2, dq_absmax = double_quantize(absmax)
        idx = codes.reshape(-1)
        dq_deq = (LEVELS[idx] * dq_absmax[np.arange(idx.shape[0]) // BLOCK]).astype(np.float32).reshape(w.shape)
        tensors[name + ".dq_codes"] = i64(dq_codes)
        tensors[name + ".dq_offset"] = f32(np.array([offset], dtype=np.float32))
        tensors[name + ".dq_absmax2"] = f32(absmax2)
        tensors[name + ".dq_absmax"] = f32(dq_absmax)
        tensors[name + ".dq_deq"] = f32(dq_deq)
        tensors[name + ".int8_codes"] = i64(qi)
        tensors[name + ".int8_scale"] = f32(scale)
        tensors[name + ".int8_deq"] = f32(deqi)
    os.makedirs(OUT, exist_ok=True)
    save(os.path.join(OUT, "nf4.safetensors"), tensors)
    print("wrote", os.path.join(OUT, "nf4.safetensors"), len(tensors), "tensors")


if __name__ == "__main__":
    main()
