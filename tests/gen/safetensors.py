#!/usr/bin/python3
"""Writes the safetensors fixtures of tests/spec/safetensors_spec.lua into
tests/fixtures/safetensors/.

The files are laid out by hand (struct + json), as the format describes them, so the
corrupt ones can be crafted too; the values come from numpy and PyTorch (float16 and
bfloat16 conversions, rounded to nearest even). expected.lua holds what a reader must
return for dtypes.safetensors (float tensors in their own dtype, integers as int64),
and the values a writer must produce when it rounds float32 to F16 and BF16 (PyTorch's results, as float32 values and as raw bits).

Run: /usr/bin/python3 tests/gen/safetensors.py   (needs numpy and torch)
"""
import json
import math
import os
import struct

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "safetensors")

INF, NAN = float("inf"), float("nan")


# ---- the format ---------------------------------------------------------------------

def pack(header, data, pad=True):
    """8-byte little-endian header length, the header (padded with spaces to a multiple
    of 8, as the reference writer does), then the data buffer."""
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def build(tensors, metadata=None):
    """tensors: list of (name, dtype string, shape, raw little-endian bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return pack(header, data)


def write(name, blob):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)


# ---- Lua literals ---------------------------------------------------------------------

def lua_number(v):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
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


def lua_list(values):
    return "{" + ", ".join(lua_number(v) for v in values) + "}"


def lua_string(s):
    out = []
    for byte in s.encode():
        c = chr(byte)
        if c in '"\\' or byte < 32 or byte == 127:
            out.append("\\%03d" % byte)
        else:
            out.append(c if byte < 128 else "\\x%02x" % byte)
    return '"' + "".join(out) + '"'


# ---- dtypes.safetensors: every decoded dtype with known values --------------------------

def dtypes_file():
    rng = np.random.default_rng(7)
    f32 = np.array([1.5, -0.0, INF, -INF, NAN, 3.4028235e38, 1e-45, -2.75] + list(rng.standard_normal(4)),
                   dtype=np.float32)
    f16_src = [0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 2.0 ** -24, 2.0 ** -14, 0.1, INF, -INF, NAN,
               1.0 / 3.0, 3.140625]
    bf16_src = [0.0, -0.0, 1.0, -2.5, 1e38, -3e38, 1e-40, 0.1, INF, -INF, NAN, 1.0 / 3.0]
    f64 = np.array([0.1, -2.5, 1e300, 1e-50, 1.0 / 3.0], dtype=np.float64)
    f16 = torch.tensor(f16_src, dtype=torch.float32).half()
    bf16 = torch.tensor(bf16_src, dtype=torch.float32).bfloat16()
    ints = {
        "I64": np.array([-2 ** 63, 2 ** 63 - 1, 2 ** 53 + 1, 0, -1, 50256], dtype="<i8"),
        "I32": np.array([[-2 ** 31, 2 ** 31 - 1], [0, -7]], dtype="<i4"),
        "I16": np.array([-32768, 32767, 5], dtype="<i2"),
        "I8": np.array([-128, 127, 0, -1], dtype="i1"),
        "U64": np.array([0, 2 ** 63 - 1, 12], dtype="<u8"),
        "U32": np.array([0, 2 ** 32 - 1, 3], dtype="<u4"),
        "U16": np.array([0, 65535, 4], dtype="<u2"),
        "U8": np.array([0, 255, 128], dtype="u1"),
        "BOOL": np.array([True, False, True], dtype="?"),
    }
    weight = rng.standard_normal((2, 3, 4)).astype(np.float32)

    entries = [   # (name, dtype, shape, raw bytes, expected values, expected ft dtype)
        ("f32", "F32", [3, 4], f32.astype("<f4").tobytes(), f32.tolist(), "float32"),
        ("f16", "F16", [len(f16_src)], f16.view(torch.int16).numpy().astype("<i2").tobytes(),
         f16.float().tolist(), "float16"),
        ("bf16", "BF16", [len(bf16_src)], bf16.view(torch.int16).numpy().astype("<i2").tobytes(),
         bf16.float().tolist(), "bfloat16"),
        ("f64", "F64", [5], f64.astype("<f8").tobytes(), f64.tolist(), "float64"),
        ("h.0.attn.c_attn.weight", "F32", [2, 3, 4], weight.astype("<f4").tobytes(),
         weight.reshape(-1).tolist(), "float32"),
        ("scalar", "F32", [], np.array([3.25], dtype="<f4").tobytes(), [3.25], "float32"),
        ("empty", "F32", [0, 3], b"", [], "float32"),
    ]
    for dtype, arr in ints.items():
        entries.append((dtype.lower(), dtype, list(arr.shape), arr.tobytes(),
                        [int(v) for v in arr.reshape(-1)], "int64"))
    # The reference writer's order: larger elements first, then by name.
    size = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
            "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    entries.sort(key=lambda e: (-size[e[1]], e[0]))
    metadata = {"format": "pt", "note": "\u00fcn\u00efc\u00f6d\u00e9 \"quoted\"\n"}
    write("dtypes.safetensors", build([(n, d, s, r) for n, d, s, r, _, _ in entries], metadata))

    lines = ["  tensors = {"]
    for name, dtype, shape, _, values, ft_dtype in entries:
        lines.append("    [%s] = {stored = %s, dtype = %s, shape = {%s}, values = %s}," % (
            lua_string(name), lua_string(dtype), lua_string(ft_dtype), ", ".join(map(str, shape)),
            lua_list(values)))
    lines.append("  },")
    lines.append("  metadata = {%s}," % ", ".join(
        "[%s] = %s" % (lua_string(k), lua_string(v)) for k, v in sorted(metadata.items())))
    return lines


# ---- rounding of float32 to F16 / BF16 by a writer ------------------------------------------

def rounding():
    rng = np.random.default_rng(11)
    half_ulp16 = 2.0 ** -11
    special = [
        0.0, -0.0, 1.0, INF, -INF, NAN,
        1 + half_ulp16, 1 + 3 * half_ulp16, -(1 + 3 * half_ulp16),   # ties to even
        1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8,                              # bfloat16 ties
        65504.0, 65519.99, 65520.0, 1e10, -1e10,                      # half's top and overflow
        2.0 ** -25, 2.0 ** -25 * 1.0001, 1.5 * 2.0 ** -24, 2.5 * 2.0 ** -24,   # half subnormals
        2.0 ** -14 - 2.0 ** -26, 2.0 ** -14, -3e-6, 1e-45, 3.4028235e38, -3.4028235e38,
        1e-39, 0.1, 1.0 / 3.0,
    ]
    values = np.array(special + list(rng.standard_normal(40) * 10.0 ** rng.integers(-8, 6, 40)),
                      dtype=np.float32)
    src = torch.from_numpy(values)
    f16, bf16 = src.half(), src.bfloat16()
    bits16 = f16.view(torch.int16).numpy().astype(np.uint16)
    bitsbf = bf16.view(torch.int16).numpy().astype(np.uint16)
    return [
        "  rounding = {",
        "    values = %s," % lua_list(values.tolist()),
        "    f16 = %s," % lua_list(f16.float().tolist()),
        "    f16_bits = %s," % lua_list(bits16.tolist()),
        "    bf16 = %s," % lua_list(bf16.float().tolist()),
        "    bf16_bits = %s," % lua_list(bitsbf.tolist()),
        "  },",
    ]


# ---- corrupt files -----------------------------------------------------------------------------

def f32_bytes(n):
    return np.arange(n, dtype="<f4").tobytes()


def corrupt_files():
    write("bad_truncated.safetensors", b"\x10\x00\x00\x00\x00")
    write("bad_header_past_end.safetensors", struct.pack("<Q", 1000) + b"{" + b" " * 91)
    # data_offsets [0, 1000] for a [250] float32 tensor, but only 900 bytes of data.
    write("bad_offsets_past_end.safetensors", pack(
        {"h.0.attn.c_attn.weight": {"dtype": "F32", "shape": [250], "data_offsets": [0, 1000]}}, f32_bytes(225)))
    write("bad_dtype.safetensors", pack({"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}},
                                        f32_bytes(2)))
    write("bad_not_json.safetensors", pack(b"{not json}", f32_bytes(2)))
    write("bad_not_object.safetensors", pack(b"[1, 2]", b""))
    write("bad_trailing.safetensors", pack(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} xyz',
                                           f32_bytes(2)))
    write("bad_missing_field.safetensors", pack({"w": {"dtype": "F32", "data_offsets": [0, 8]}}, f32_bytes(2)))
    write("bad_offsets_type.safetensors", pack({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}},
                                               f32_bytes(2)))
    write("bad_offsets_reversed.safetensors", pack(
        {"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, f32_bytes(2)))
    write("bad_shape.safetensors", pack({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}},
                                        f32_bytes(2)))
    write("bad_size_mismatch.safetensors", pack(
        {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}, f32_bytes(5)))
    write("bad_hole.safetensors", pack({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}, f32_bytes(6)))
    write("bad_overlap.safetensors", pack({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32_bytes(3)))
    write("bad_extra_data.safetensors", pack({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                             f32_bytes(3)))
    write("bad_metadata.safetensors", pack({"__metadata__": {"epoch": 3},
                                            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                           f32_bytes(2)))
    entry = '{"dtype":"F32","shape":[2],"data_offsets":[%d,%d]}'
    write("bad_duplicate.safetensors", pack(('{"a":%s,"a":%s}' % (entry % (0, 8), entry % (8, 16))).encode(),
                                            f32_bytes(4)))
    # A dtype the format knows but ftlua does not decode: the header is valid.
    write("unsupported_dtype.safetensors", build([("ok", "F32", [2], f32_bytes(2)),
                                                  ("fp8", "F8_E4M3", [4], bytes([0x38, 0x40, 0xb8, 0x00]))]))


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = ["-- Generated by tests/gen/safetensors.py: do not edit.", "return {"]
    lines += dtypes_file() + rounding() + ["}"]
    with open(os.path.join(OUT, "expected.lua"), "w") as f:
        f.write("\n".join(lines) + "\n")
    corrupt_files()


if __name__ == "__main__":
    main()
