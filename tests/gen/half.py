#!/usr/bin/python3
"""References for the storage dtypes (bfloat16, float16, float64) from PyTorch, for
tests/spec/dtype_spec.lua and tests/spec/half_ops_spec.lua.

Run with Debian's python3-torch (1.13):

    /usr/bin/python3 tests/gen/half.py

Writes tests/fixtures/half/ (float32 and int64 tensors only: the runtime's safetensors reader is
not what these tests check, so no half tensor is stored):

    bf16_products.safetensors  the bfloat16 matmul precision (ft.set_matmul_precision): products
                         of float32 activations with a bfloat16 weight where the activations (in
                         backward, the output gradient) are rounded to bfloat16 by torch's .to() and
                         multiplied exactly, "<case>.<name>": x, w (bfloat16 values), b, g and
                         y = x.bf16 @ w^T + b, dx = g.bf16 @ w computed in float64; x holds the
                         rounding edge values too. `grouped.*`: a [3, out, in] weight and row
                         groups of 10, 0 and 30.
    convert.safetensors  float32 -> bfloat16 / float16 by torch's .to(): `input` (float32 values
                         chosen at the edges: ties at several exponents, which round half to even,
                         values just either side of a tie, float32 and float16 subnormals, the
                         largest finite values and the first to overflow to inf, inf, NaN, -0) and
                         random ones; `bf16_bits` / `f16_bits` (int64, the 16-bit pattern) and
                         `bf16_value` / `f16_value` (the rounded value, exact in float32). Every
                         16-bit pattern decoded: `bf16_all` / `f16_all` [65536], pattern i at
                         position i + 1 (NaN patterns read NaN).
    ops.safetensors      layers and ops with bfloat16 / float16 (and float64) operands, "<case>.<name>":
                         inputs as float32 values (a half operand as its rounded values, exact in
                         float32), outputs and gradients computed by torch in float64 from those
                         values (so, "torch computing with the rounded weight upcast"), stored as
                         float32; gradients of a half weight are rounded to its dtype by torch
                         (.to(dtype)) as the leaf's .grad is. Index tensors are 0-based int64.

The gradient of a half weight is a float32 sum rounded once to the weight's dtype. The runtime's
float32 sum differs from the exact one (by at most K * 2^-24 of the sum of the terms' magnitudes),
so an element whose exact value lies that close to a midpoint between two neighbours of the dtype
may round to either: "<grad>_amb" (int64 0/1) marks them, and the spec accepts either neighbour
there and only torch's rounded value everywhere else.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "half")
HALF = {"bf16": torch.bfloat16, "f16": torch.float16}


def save(path, tensors):
    """A safetensors file of float32 / int64 tensors (name -> torch tensor)."""
    header, data = {}, b""
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        if t.dtype == torch.float64:
            t = t.float()
        code = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    os.replace(tmp, path)


def f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def bits16(t):
    """The 16-bit patterns of a bfloat16 / float16 tensor as int64 0..65535."""
    return t.view(torch.int16).to(torch.int64) & 0xFFFF


# ---- conversions ---------------------------------------------------------------------------

def edge_values():
    v = []
    for e in (0, -3, 7, -20, 40):          # ties at several exponents, both signs
        s = 2.0 ** e
        for bf in (8, 11):                  # bfloat16 (8 significant bits), float16 (11)
            h = 2.0 ** -bf
            v += [s * (1 + h), s * (1 + 3 * h), -s * (1 + h), -s * (1 + 3 * h),     # ties -> even
                  s * (1 + h + 2.0 ** -23), s * (1 + h - 2.0 ** -23)]               # either side
    v += [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1.0, -1.0, 0.1, 1 / 3, 1e-3, 65504.0]
    # float32 subnormals (bfloat16 keeps float32's exponent range)
    v += [f32(1), f32(3), f32(0x8000), f32(0x18000), f32(0x28000), f32(0x10000), f32(0x007FFFFF), f32(0x00800000)]
    # bfloat16's largest finite value 0x7F7F, the values around its overflow tie, float32's max
    v += [f32(0x7F7F0000), f32(0x7F7F7FFF), f32(0x7F7F8000), f32(0x7F7FFFFF), -f32(0x7F7F8000)]
    # float16: subnormals (2^-24 .. 2^-14), ties among them, the largest finite and the overflow
    v += [2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -25 + 2.0 ** -40, 2.0 ** -26, 5 * 2.0 ** -26,
          2.0 ** -14, 2.0 ** -14 - 2.0 ** -24, 7 * 2.0 ** -25, 65519.0, 65519.996, 65520.0, 65536.0, 1e5, -65520.0]
    return v


def conversions():
    g = torch.Generator().manual_seed(11)
    rand = torch.cat([torch.randn(48, generator=g) * s for s in (1.0, 1e-6, 300.0)])
    x = torch.cat([torch.tensor(edge_values(), dtype=torch.float32), rand.float()])
    out = {"input": x}
    for key, dt in HALF.items():
        # element by element: torch's vector and scalar paths agree except on NaN bits (0xFFFF and
        # 0x7FC0 for bfloat16); the spec checks only that a NaN stays NaN
        h = torch.stack([x[i].to(dt) for i in range(x.numel())])
        out[key + "_bits"] = bits16(h)
        out[key + "_value"] = h.float()
        every = torch.arange(65536, dtype=torch.int64).to(torch.int16).view(dt)
        out[key + "_all"] = every.float()
    return out


# ---- ops -----------------------------------------------------------------------------------

def rounded(t, dt):
    """t rounded to dt, as float32 values."""
    return t.to(dt).float()


def ambiguous(exact, absum, dt):
    """int64 mask of the elements of exact (float64) whose rounding to dt a float32 sum may not
    reproduce: those within 2e-6 * absum (absum: the same sum over absolute values; a float32 sum
    of K <= 32 terms is off by at most K * 2^-24 * absum) of a midpoint between neighbours of dt.
    There the spec accepts either neighbour; everywhere else the exact rounded value."""
    mag = bits16(exact.float().abs().to(dt))                 # |value| rounded, as a bit pattern
    def value(bits):
        return bits.clamp(0, 0x7BFF if dt == torch.float16 else 0x7F7F).to(torch.int16).view(dt).double()
    here, up, down = value(mag), value(mag + 1), value(mag - 1)
    mids = torch.stack([(here + up) / 2, (here + down) / 2])
    close = ((mids - exact.abs().unsqueeze(0)).abs() <= 2e-6 * absum.unsqueeze(0)).any(0)
    return (close & (absum > 0)).to(torch.int64)   # an exact zero (nothing summed) stays exact


def half_grad(out, name, exact, absum, dt):
    """Stores a half leaf's gradient as torch rounds it, and where that rounding is ambiguous."""
    out[name] = exact.float().to(dt).float()
    out[name + "_amb"] = ambiguous(exact, absum, dt)


def linear_cases(out):
    for key, dt in HALF.items():
        g = torch.Generator().manual_seed({"bf16": 5, "f16": 9}[key])
        x = torch.randn(5, 12, generator=g)
        w = torch.randn(7, 12, generator=g)
        b = torch.randn(7, generator=g)
        gy = torch.randn(5, 7, generator=g)
        wh = rounded(w, dt)
        xd, whd, bd, gd = x.double(), wh.double(), b.double(), gy.double()
        c = "linear_" + key + "."
        out[c + "x"], out[c + "w32"], out[c + "w"], out[c + "b"], out[c + "gy"] = x, w, wh, b, gy
        out[c + "y"] = xd @ whd.t() + bd                    # with the rounded weight, float64
        out[c + "y32"] = xd @ w.double().t() + bd           # with the float32 weight
        out[c + "abs_xw"] = xd.abs() @ w.double().abs().t() # sum |x| |w|: the rounding bound's scale
        out[c + "dx"] = gd @ whd
        half_grad(out, c + "dw", gd.t() @ xd, gd.abs().t() @ xd.abs(), dt)   # the half leaf's grad
        out[c + "db"] = gd.sum(0)
        # torch itself, with autograd through the half leaf (a check of the formulas above)
        wl = w.to(dt).requires_grad_()
        xl = x.clone().requires_grad_()
        F.linear(xl, wl.float(), b).backward(gy)
        same = wl.grad.float() == out[c + "dw"]
        assert bool((same | out[c + "dw_amb"].bool()).all()), "linear: torch's own half grad differs"
        assert (xl.grad - out[c + "dx"].float()).abs().max() < 1e-5


def matmul_cases(out):
    for key, dt in HALF.items():
        g = torch.Generator().manual_seed({"bf16": 21, "f16": 22}[key])
        a = torch.randn(3, 4, 6, generator=g)
        b = rounded(torch.randn(6, 5, generator=g), dt)
        gy = torch.randn(3, 4, 5, generator=g)
        l = rounded(torch.randn(4, 6, generator=g), dt)    # a half operand on the left
        r = torch.randn(6, 3, generator=g)
        gl = torch.randn(4, 3, generator=g)
        ad, bd, gd = a.double(), b.double(), gy.double()
        c = "matmul_" + key + "."
        out[c + "a"], out[c + "b"], out[c + "gy"] = a, b, gy
        out[c + "y"] = ad @ bd
        out[c + "da"] = gd @ bd.t()
        half_grad(out, c + "db", (ad.transpose(1, 2) @ gd).sum(0), (ad.abs().transpose(1, 2) @ gd.abs()).sum(0), dt)
        out[c + "l"], out[c + "r"], out[c + "gl"] = l, r, gl
        out[c + "yl"] = l.double() @ r.double()
        half_grad(out, c + "dl", gl.double() @ r.double().t(), gl.double().abs() @ r.double().abs().t(), dt)
        out[c + "dr"] = l.double().t() @ gl.double()


def embedding_cases(out):
    for key, dt in HALF.items():
        g = torch.Generator().manual_seed({"bf16": 31, "f16": 32}[key])
        w = rounded(torch.randn(10, 6, generator=g), dt)
        idx = torch.tensor([[3, 0, 9], [3, 3, 7]], dtype=torch.int64)   # repeats sum in backward
        gy = torch.randn(2, 3, 6, generator=g)
        flat = idx.reshape(-1)
        dw = torch.zeros(10, 6, dtype=torch.float64).index_add_(0, flat, gy.double().reshape(-1, 6))
        absum = torch.zeros(10, 6, dtype=torch.float64).index_add_(0, flat, gy.double().abs().reshape(-1, 6))
        c = "embedding_" + key + "."
        out[c + "w"], out[c + "idx"], out[c + "gy"] = w, idx, gy
        out[c + "y"] = w[idx]
        half_grad(out, c + "dw", dw, absum, dt)


def conv_cases(out):
    for key, dt in HALF.items():
        g = torch.Generator().manual_seed({"bf16": 41, "f16": 43}[key])
        x = torch.randn(2, 3, 5, 5, generator=g)
        w = rounded(torch.randn(4, 3, 3, 3, generator=g) * 0.3, dt)
        b = torch.randn(4, generator=g)
        gy = torch.randn(2, 4, 3, 3, generator=g)
        xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
        y = F.conv2d(xd, wd, bd, stride=2, padding=1)
        y.backward(gy.double())
        wa = w.double().requires_grad_()
        F.conv2d(x.double().abs(), wa, None, stride=2, padding=1).backward(gy.double().abs())
        c = "conv2d_" + key + "."
        out[c + "x"], out[c + "w"], out[c + "b"], out[c + "gy"] = x, w, b, gy
        out[c + "y"] = y.detach()
        out[c + "dx"] = xd.grad
        half_grad(out, c + "dw", wd.grad, wa.grad, dt)
        out[c + "db"] = bd.grad


def rms(xx, ww, eps=1e-6):
    return xx * torch.rsqrt(xx.pow(2).mean(-1, keepdim=True) + eps) * ww


def norm_cases(out):
    for key, dt in HALF.items():
        g = torch.Generator().manual_seed({"bf16": 51, "f16": 52}[key])
        x = torch.randn(3, 8, generator=g)
        w = rounded(1 + 0.1 * torch.randn(8, generator=g), dt)
        b = rounded(0.1 * torch.randn(8, generator=g), dt)
        gy = torch.randn(3, 8, generator=g)
        c = "norm_" + key + "."
        out[c + "x"], out[c + "w"], out[c + "b"], out[c + "gy"] = x, w, b, gy
        ones, zeros = torch.ones(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
        for name, fn in (("ln", lambda xx, ww, bb: F.layer_norm(xx, (8,), ww, bb, 1e-5)),
                         ("rms", lambda xx, ww, bb: rms(xx, ww))):
            xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
            y = fn(xd, wd, bd)
            y.backward(gy.double())
            normed = fn(x.double(), ones, zeros)
            out[c + name + "_y"] = y.detach()
            out[c + name + "_dx"] = xd.grad
            half_grad(out, c + name + "_dw", wd.grad, (normed.abs() * gy.double().abs()).sum(0), dt)
            if name == "ln":
                half_grad(out, c + name + "_db", bd.grad, gy.double().abs().sum(0), dt)


def to_cases(out):
    """The gradient through .to(): the incoming gradient rounded to the source's dtype."""
    g = torch.Generator().manual_seed(61)
    for key, dt in HALF.items():
        c = "to_" + key + "."
        src = rounded(torch.randn(6, generator=g), dt)
        gy = torch.randn(6, generator=g) * 3
        xl = src.to(dt).requires_grad_()
        xl.float().backward(gy)                       # half leaf -> float32 -> backward(float32 grad)
        out[c + "x"], out[c + "gy"] = src, gy
        out[c + "dx"] = xl.grad.float()               # rounded once to the half dtype
        x32 = src.clone().requires_grad_()
        x32.to(dt).backward(gy.to(dt))                # float32 leaf -> half -> backward(half grad)
        out[c + "dx32"] = x32.grad                    # exact: a half value widens without rounding
        x32b = src.clone().requires_grad_()
        x32b.to(dt).backward(gy.to(dt).float())       # a float32 grad for the half root: cast first
        assert torch.equal(x32b.grad, out[c + "dx32"])


def promotion_cases(out):
    """Ops on half / float64 operands compute in float32 on the upcast values."""
    g = torch.Generator().manual_seed(71)
    for key, dt in list(HALF.items()) + [("f64", torch.float64)]:
        a = torch.randn(3, 4, generator=g, dtype=torch.float64) * 2
        b = torch.randn(3, 4, generator=g)
        af = a.to(dt).float() if dt != torch.float64 else a.float()   # the values ops see
        gy = torch.randn(3, 4, generator=g)
        c = "promote_" + key + "."
        out[c + "a"], out[c + "b"], out[c + "gy"] = af, b, gy
        if dt == torch.float64:
            out[c + "a64"] = a                         # stored as float32: the spec uses a itself
        out[c + "add"] = af + b                        # half + float32
        out[c + "mul_scalar"] = af * 1.5
        out[c + "exp"] = af.exp()
        out[c + "sigmoid"] = torch.sigmoid(af)
        out[c + "sum"] = af.double().sum()
        out[c + "mean1"] = af.double().mean(1)
        out[c + "max1"] = af.max(1).values
        out[c + "softmax"] = torch.softmax(af.double(), 1)
        out[c + "log_softmax"] = torch.log_softmax(af.double(), 0)
        out[c + "gt"] = (af > b).float()
        out[c + "pow2"] = af * af
        # gradients into the leaf through one promoted use each: a:exp() and a * b
        d_exp = gy.double() * af.double().exp()
        d_mul = gy.double() * b.double()
        if dt == torch.float64:
            out[c + "d_exp"], out[c + "d_mul"] = d_exp, d_mul
        else:
            half_grad(out, c + "d_exp", d_exp, d_exp.abs(), dt)
            half_grad(out, c + "d_mul", d_mul, d_mul.abs(), dt)


def bf16_product_cases():
    out = {}
    g = torch.Generator().manual_seed(23)
    for case, (m, k, n) in {"small": (37, 300, 129), "wide": (64, 896, 1024)}.items():
        x = torch.randn(m, k, generator=g)
        edges = torch.tensor([v for v in edge_values() if abs(v) < 1e4], dtype=torch.float32)
        x.view(-1)[: edges.numel()] = edges   # activations on the rounding ties and either side of them
        w = rounded(torch.randn(n, k, generator=g) * 0.05, torch.bfloat16)
        b = torch.randn(n, generator=g)
        gy = torch.randn(m, n, generator=g)
        xr, gr = rounded(x, torch.bfloat16).double(), rounded(gy, torch.bfloat16).double()
        out.update({case + ".x": x, case + ".w": w, case + ".b": b, case + ".g": gy,
                    case + ".y": xr @ w.double().T + b.double(), case + ".dx": gr @ w.double()})
    sizes = [10, 0, 30]
    x = torch.randn(sum(sizes), 64, generator=g)
    w = rounded(torch.randn(3, 48, 64, generator=g) * 0.1, torch.bfloat16)
    gy = torch.randn(sum(sizes), 48, generator=g)
    ys, dxs, row = [], [], 0
    for e, size in enumerate(sizes):
        xr = rounded(x[row:row + size], torch.bfloat16).double()
        gr = rounded(gy[row:row + size], torch.bfloat16).double()
        ys.append(xr @ w[e].double().T)
        dxs.append(gr @ w[e].double())
        row += size
    out.update({"grouped.x": x, "grouped.w": w, "grouped.g": gy, "grouped.y": torch.cat(ys),
                "grouped.dx": torch.cat(dxs)})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    save(os.path.join(OUT, "bf16_products.safetensors"), bf16_product_cases())
    torch.set_num_threads(1)
    save(os.path.join(OUT, "convert.safetensors"), conversions())
    out = {}
    for fn in (linear_cases, matmul_cases, embedding_cases, conv_cases, norm_cases, to_cases, promotion_cases):
        fn(out)
    save(os.path.join(OUT, "ops.safetensors"), out)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
