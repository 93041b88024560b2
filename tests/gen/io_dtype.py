#!/usr/bin/python3
"""Writes the fixtures of tests/spec/io_dtype_spec.lua (bfloat16, float16 and float64 through
safetensors and HDF5) into tests/fixtures/io_dtype/.

The values come from PyTorch (torch.bfloat16 / torch.float16 tensors and their conversions,
rounded as PyTorch rounds) and numpy; the safetensors files are laid out by hand (struct +
json) as the format describes them, the HDF5 files are written by h5py. expected.lua holds,
for every tensor, the dtype a reader must return, its shape, its values and its bits (the
little-endian bytes of the tensor in that dtype, as hex).

  torch_dtypes.safetensors  BF16, F16, F32, F64 and I64 tensors in the reference layout
  misaligned.safetensors    tensors whose data is not aligned to their element size (the
                            header padded to leave the data buffer 8-aligned, then a U8
                            tensor of odd length in front), and aligned ones between them
  u64_big.safetensors       a U64 value past INT64_MAX (an error, mapped or not)
  h5py_dtypes.h5            float16 (both byte orders), float32, float64 (both byte
                            orders), a bfloat16 dataset in ftlua's layout written from raw
                            bits, and integers, all by h5py
  h5py_float24.h5           a 24-bit float (a layout ftlua does not read)

Run: /usr/bin/python3 tests/gen/io_dtype.py   (needs numpy, torch and h5py)
"""
import json
import math
import os
import struct

import h5py
import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "io_dtype")

INF, NAN = float("inf"), float("nan")
SIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "F16": 2, "BF16": 2, "U8": 1}
FT_DTYPE = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
            "U8": "int64", "U64": "int64"}


# ---- the format ------------------------------------------------------------------------

def pack(header, data, pad_to=8):
    """8-byte little-endian header length, the header padded with spaces to a multiple of
    pad_to, then the data buffer."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((pad_to - len(text) % pad_to) % pad_to)
    return struct.pack("<Q", len(text)) + text + data


def write(name, blob):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)


# ---- values ------------------------------------------------------------------------------

def torch_bits(t):
    """The little-endian bytes of tensor t in its own dtype."""
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    return t.contiguous().numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def values_of(t):
    """Exact values of t as Python numbers (16-bit floats widen to float32 exactly)."""
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.float().reshape(-1).tolist()
    return t.reshape(-1).tolist()


def special_values():
    """float64 values covering what each 16-bit type rounds: ties, subnormals, overflow,
    signed zeros, infinities, NaN, and double-rounding cases (a float64 just above a tie
    that float32 rounds onto the tie, as PyTorch's .half() / .bfloat16() of a double does)."""
    rng = np.random.default_rng(23)
    v = [0.0, -0.0, 1.0, -2.5, INF, -INF, NAN, 0.1, 1.0 / 3.0,
         1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11,            # float16 ties (to even)
         1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8,              # bfloat16 ties
         1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -8 + 2.0 ** -40,   # double rounding
         65504.0, 65519.0, 65520.0, 1e10, -3e38, 3.3895e38, 1e39,
         2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -24, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -24,
         1e-40, -1e-42, 2.0 ** -126, 2.0 ** -133, 1e-45, 1e-300]
    v += list(rng.standard_normal(24) * 10.0 ** rng.integers(-6, 6, 24))
    return np.array(v, dtype=np.float64)


# ---- torch_dtypes.safetensors -------------------------------------------------------------

def torch_dtypes():
    src = torch.from_numpy(special_values())
    n = src.numel()
    tensors = {   # name -> (format dtype, torch tensor)
        "bf16": ("BF16", src.float().bfloat16()),
        "f16": ("F16", src.float().half()),
        "f32": ("F32", src.float()),
        "f64": ("F64", src.clone()),
        "bf16_2d": ("BF16", torch.randn(3, 5, generator=torch.Generator().manual_seed(5)).bfloat16()),
        "f16_scalar": ("F16", torch.tensor(-0.333, dtype=torch.float16)),
        "f64_empty": ("F64", torch.zeros(0, 4, dtype=torch.float64)),
        "ids": ("I64", torch.tensor([0, -1, 2 ** 62, 50256, -2 ** 63], dtype=torch.int64)),
    }
    # The reference writer's layout: larger elements first, then by name.
    order = sorted(tensors, key=lambda k: (-SIZE[tensors[k][0]], k))
    header, data = {}, b""
    for name in order:
        dtype, t = tensors[name]
        raw = torch_bits(t)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"format": "pt"}
    write("torch_dtypes.safetensors", pack(header, data))
    expected = {}
    for name in order:
        dtype, t = tensors[name]
        expected[name] = {"stored": dtype, "dtype": FT_DTYPE[dtype], "shape": list(t.shape),
                          "values": values_of(t), "bits": torch_bits(t).hex()}

    # Conversions while reading ({dtype = ...}): PyTorch's .to() of the stored tensor.
    targets = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
               "float64": torch.float64}
    converted = {}
    for name in ("bf16", "f16", "f32", "f64"):
        t = tensors[name][1]
        converted[name] = {}
        for target, tdtype in targets.items():
            c = t.to(tdtype)
            converted[name][target] = {"values": values_of(c), "bits": torch_bits(c).hex()}
    assert n == tensors["bf16"][1].numel()
    return expected, converted


# ---- misaligned.safetensors --------------------------------------------------------------

def misaligned():
    g = torch.Generator().manual_seed(9)
    pieces = [   # (name, format dtype, tensor); in this order in the data
        ("a_f64", "F64", torch.randn(3, dtype=torch.float64, generator=g)),      # offset 0: aligned
        ("b_pad", "U8", torch.tensor([1, 2, 3], dtype=torch.uint8)),           # 3 bytes: what follows is odd
        ("c_f32", "F32", torch.randn(2, 2, generator=g)),
        ("d_bf16", "BF16", torch.randn(5, generator=g).bfloat16()),
        ("e_f16", "F16", torch.randn(3, generator=g).half()),
        ("f_f64", "F64", torch.randn(2, dtype=torch.float64, generator=g)),
        ("g_i64", "I64", torch.tensor([7, -8, 2 ** 40], dtype=torch.int64)),
    ]
    header, data, expected = {}, b"", {}
    for name, dtype, t in pieces:
        raw = t.numpy().astype("u1").tobytes() if dtype == "U8" else torch_bits(t)
        begin = len(data)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [begin, begin + len(raw)]}
        data += raw
        ft_bits = (t.to(torch.int64) if dtype == "U8" else t)
        expected[name] = {"stored": dtype, "dtype": FT_DTYPE[dtype], "shape": list(t.shape),
                          "values": values_of(ft_bits), "bits": torch_bits(ft_bits).hex(),
                          "aligned": begin % SIZE[dtype] == 0}
    # Two aligned ones after a U8 that brings the offset back to a multiple of 8.
    pad = (8 - len(data) % 8) % 8 or 8
    t = torch.arange(pad, dtype=torch.uint8)
    header["h_pad"] = {"dtype": "U8", "shape": [pad], "data_offsets": [len(data), len(data) + pad]}
    expected["h_pad"] = {"stored": "U8", "dtype": "int64", "shape": [pad], "values": t.tolist(),
                         "bits": torch_bits(t.to(torch.int64)).hex(), "aligned": True}
    data += t.numpy().tobytes()
    for name, dtype, t in (("i_f32", "F32", torch.randn(2, generator=g)),
                           ("j_i64", "I64", torch.tensor([1, 2], dtype=torch.int64))):
        raw = torch_bits(t)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        expected[name] = {"stored": dtype, "dtype": FT_DTYPE[dtype], "shape": list(t.shape),
                          "values": values_of(t), "bits": raw.hex(), "aligned": len(data) % SIZE[dtype] == 0}
        data += raw
    blob = pack(header, data)
    (hlen,) = struct.unpack("<Q", blob[:8])
    assert (8 + hlen) % 8 == 0                       # the data buffer starts 8-aligned in the file
    assert [k for k, e in expected.items() if not e["aligned"]] == ["c_f32", "d_bf16", "e_f16", "f_f64", "g_i64"]
    write("misaligned.safetensors", blob)
    return expected


def u64_big():
    raw = np.array([1, 2 ** 63 + 5], dtype="<u8").tobytes()
    write("u64_big.safetensors", pack({"counts": {"dtype": "U64", "shape": [2], "data_offsets": [0, 16]}}, raw))


# ---- HDF5 by h5py ----------------------------------------------------------------------------

def bf16_type():
    """ftlua's bfloat16 layout built with h5py's low-level API."""
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7)
    t.set_size(2)
    t.set_ebias(127)
    return t


def create_raw(f, name, ftype, shape):
    """A dataset of file type ftype made with h5py's low-level API, without timestamps (the
    same values give the same file)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    return h5py.h5d.create(f.id, name, ftype, h5py.h5s.create_simple(shape), dcpl=dcpl)


def h5py_files():
    src = special_values()
    g = np.random.default_rng(31)
    arrays = {   # dataset -> (numpy array as h5py stores it, ftlua dtype, torch tensor of the values)
        "half/le": src.astype("<f4").astype("<f2"),
        "half/be": g.standard_normal(6).astype(">f2"),
        "single": src.astype("<f4"),
        "double/le": src.astype("<f8"),
        "double/be": g.standard_normal((2, 3)).astype(">f8"),
        "ints/i32": np.array([-2 ** 31, 5, 2 ** 31 - 1], dtype="<i4"),
        "ints/u8": np.array([0, 200, 255], dtype="u1"),
    }
    expected = {}
    path = os.path.join(OUT, "h5py_dtypes.h5")
    with h5py.File(path, "w", track_order=False) as f:
        for name, a in arrays.items():
            f.create_dataset(name, data=a)
            kind = {"f2": "float16", "f4": "float32", "f8": "float64"}.get(a.dtype.str[1:], "int64")
            le = a.astype(a.dtype.newbyteorder("<")) if kind != "int64" else a.astype("<i8")
            if kind == "float16":
                values = le.astype(np.float32).reshape(-1).tolist()
            else:
                values = le.reshape(-1).tolist()
            expected[name.replace("/", ".")] = {"dtype": kind, "shape": list(a.shape), "values": values,
                                                "bits": le.tobytes().hex()}
        # bfloat16 from raw bits (no conversion by HDF5): PyTorch's rounding of the values.
        bf = torch.from_numpy(src).float().bfloat16()
        bits = bf.view(torch.int16).numpy().astype("<u2")
        t = bf16_type()
        d = create_raw(f, b"bf16", t, bits.shape)
        d.write(h5py.h5s.ALL, h5py.h5s.ALL, bits, mtype=t)
        expected["bf16"] = {"dtype": "bfloat16", "shape": list(bits.shape), "values": values_of(bf),
                            "bits": bits.tobytes().hex()}
        f.attrs["note"] = "written by h5py"
    # A 24-bit float: sign bit 23, 7 exponent bits at 16 (bias 63), 16 mantissa bits.
    with h5py.File(os.path.join(OUT, "h5py_float24.h5"), "w") as f:
        f["ok"] = np.array([1.0, 2.0], dtype="<f4")
        t = h5py.h5t.IEEE_F32LE.copy()
        t.set_fields(23, 16, 7, 0, 16)
        t.set_size(3)
        t.set_ebias(63)
        d = create_raw(f, b"weights24", t, (4,))
        d.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array([1.0, -2.0, 0.5, 3.0], dtype="<f4"))
    return expected


# ---- Lua literals ------------------------------------------------------------------------------

def lua_number(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        v = int(v)
        return "math.mininteger" if v == -2 ** 63 else str(v)
    v = float(v)
    if math.isnan(v):
        return "0/0"
    if math.isinf(v):
        return "1/0" if v > 0 else "-1/0"
    if v == 0:
        return "-0.0" if math.copysign(1, v) < 0 else "0.0"
    return repr(v)


def lua(v, indent="  "):
    if isinstance(v, dict):
        inner = indent + "  "
        items = ["%s[%s] = %s," % (inner, json.dumps(k), lua(v[k], inner)) for k in sorted(v)]
        return "{\n" + "\n".join(items) + "\n" + indent + "}"
    if isinstance(v, list):
        return "{" + ", ".join(lua_number(x) for x in v) + "}"
    if isinstance(v, str):
        return json.dumps(v)
    return lua_number(v)


def main():
    np.seterr(over="ignore")   # values past float16's / float32's range become infinities, on purpose
    os.makedirs(OUT, exist_ok=True)
    tensors, converted = torch_dtypes()
    expected = {"tensors": tensors, "converted": converted, "misaligned": misaligned(), "h5py": h5py_files()}
    u64_big()
    with open(os.path.join(OUT, "expected.lua"), "w") as f:
        f.write("-- Generated by tests/gen/io_dtype.py: do not edit.\nreturn " + lua(expected, "") + "\n")


if __name__ == "__main__":
    main()
