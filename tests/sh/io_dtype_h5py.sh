#!/bin/bash
# HDF5 checkpoints and h5py, both ways, for bfloat16, float16, float32, float64 and int64:
#  1. ftlua loads PyTorch's tensors (tests/fixtures/io_dtype/torch_dtypes.safetensors) and
#     writes them with ft.save; h5py reads that file: float16 as numpy float16 with the same
#     bits, float32/float64/int64 the same bits, bfloat16 (a float type of its own layout,
#     which numpy lacks) as float32 holding exactly the bfloat16 values; the datasets' HDF5
#     types have the documented layouts.
#  2. h5py writes float16, float64 (both byte orders) and bfloat16 datasets; ftlua loads them
#     in those dtypes and writes them as safetensors, whose bytes a reader here checks.
# The reference is the fixture's bytes, read here with struct + json.
set -euo pipefail
cd "${FT_SOURCE_DIR:-$(dirname "$0")/../..}"
source tests/sh/lib/common.bash
python=${FT_PYTHON:-/usr/bin/python3}
if ! "$python" -c 'import h5py, numpy' 2>/dev/null; then
  echo "SKIP: h5py is not importable by $python (Debian package python3-h5py)"
  exit 0
fi
fixture=$PWD/tests/fixtures/io_dtype/torch_dtypes.safetensors
export LUA_PATH="${LUA_PATH:-bindings/lua/?.lua;;}"

# A reader of safetensors files from the format's description: name -> (dtype, shape, bytes).
cat > "$tmp/st.py" <<'PY'
import json, struct
def read(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    return {k: (e["dtype"], tuple(e["shape"]), data[e["data_offsets"][0]:e["data_offsets"][1]])
            for k, e in header.items()}
PY

# ---- 1. ftlua writes, h5py reads ----------------------------------------------------------
"$ftlua" - "$fixture" "$tmp/ft.h5" <<'LUA' || fail "ft.save of the PyTorch tensors"
local t = ft.safetensors.load(arg[1])
ft.save(arg[2], t)
LUA

PYTHONPATH=$tmp "$python" - "$fixture" "$tmp/ft.h5" <<'PY' || fail "h5py does not read ftlua's file as it should"
import sys, h5py, numpy as np, st
src = st.read(sys.argv[1])
np_of = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I64": "<i8", "BF16": "<u2"}
layout = {"F16": ((15, 10, 5, 0, 10), 15), "BF16": ((15, 7, 8, 0, 7), 127)}
with h5py.File(sys.argv[2], "r") as f:
    assert sorted(f.keys()) == sorted(src), (sorted(f.keys()), sorted(src))
    for name, (dtype, shape, raw) in src.items():
        d = f[name]
        want = np.frombuffer(raw, dtype=np_of[dtype]).reshape(shape)
        got = d[()]
        assert got.shape == shape, (name, got.shape, shape)
        ftype = d.id.get_type()
        if dtype in layout:
            fields, ebias = layout[dtype]
            assert ftype.get_size() == 2 and ftype.get_fields() == fields and ftype.get_ebias() == ebias, \
                (name, ftype.get_size(), ftype.get_fields(), ftype.get_ebias())
        if dtype == "BF16":
            # h5py has no bfloat16: it reads the dataset as float32 through HDF5's conversion,
            # which is exact (every bfloat16 value is a float32 value).
            assert got.dtype == np.float32, (name, got.dtype)
            as_f32 = (want.astype(np.uint32) << 16).view(np.float32)
            nan = np.isnan(as_f32)
            assert np.array_equal(np.isnan(got), nan), name
            assert np.array_equal(got[~nan].view(np.uint32), as_f32[~nan].view(np.uint32)), \
                (name, got[~nan], as_f32[~nan])
        else:
            assert got.dtype == np.dtype(np_of[dtype]), (name, got.dtype, np_of[dtype])
            assert got.tobytes() == want.tobytes(), name
        print("h5py reads %-10s %-4s as %s" % (name, dtype, got.dtype))
PY

# ---- 2. h5py writes, ftlua reads ------------------------------------------------------------
PYTHONPATH=$tmp "$python" - "$tmp/py.h5" "$tmp/want.bin" <<'PY' || fail "writing the h5py file"
import sys, h5py, numpy as np
rng = np.random.default_rng(5)
v = np.concatenate([[0.0, -0.0, 1.0, np.inf, -np.inf, 65504.0, 2.0 ** -24, 1e-8, 3e38],
                    rng.standard_normal(20) * 10.0 ** rng.integers(-5, 5, 20)])
bf16 = h5py.h5t.IEEE_F32LE.copy()
bf16.set_fields(15, 7, 8, 0, 7)
bf16.set_size(2)
bf16.set_ebias(127)
with np.errstate(over="ignore"):
    arrays = {"h16": v.astype("<f2"), "h16be": v.astype(">f2"), "d64": v.astype("<f8"),
              "d64be": v.astype(">f8"), "s32": v.astype("<f4")}
with h5py.File(sys.argv[1], "w") as f:
    for name, a in arrays.items():
        f[name] = a
    # bfloat16 written from float32 values by HDF5's own conversion
    d = h5py.h5d.create(f.id, b"b16", bf16, h5py.h5s.create_simple(v.shape))
    with np.errstate(over="ignore"):
        d.write(h5py.h5s.ALL, h5py.h5s.ALL, v.astype("<f4"))
    back = np.empty(v.shape, dtype="<u2")
    d.read(h5py.h5s.ALL, h5py.h5s.ALL, back, mtype=bf16)
with open(sys.argv[2], "wb") as out:
    for name in sorted(arrays):
        a = arrays[name]
        out.write(a.astype(a.dtype.newbyteorder("<")).tobytes())
    out.write(back.tobytes())
PY

"$ftlua" - "$tmp/py.h5" "$tmp/from_py.safetensors" > "$tmp/dtypes.txt" <<'LUA' || fail "ft.load of h5py's file"
local t = ft.load(arg[1])
for _, name in ipairs({"b16", "d64", "d64be", "h16", "h16be", "s32"}) do print(name, t[name]:dtype()) end
ft.safetensors.save(arg[2], t)
LUA
want_dtypes=$'b16\tbfloat16\nd64\tfloat64\nd64be\tfloat64\nh16\tfloat16\nh16be\tfloat16\ns32\tfloat32'
[ "$(cat "$tmp/dtypes.txt")" = "$want_dtypes" ] || fail "dtypes of h5py's datasets: $(cat "$tmp/dtypes.txt")"

PYTHONPATH=$tmp "$python" - "$tmp/from_py.safetensors" "$tmp/want.bin" <<'PY' || fail "ftlua's tensors differ from h5py's data"
import sys, st
got = st.read(sys.argv[1])
want = open(sys.argv[2], "rb").read()
stored = {"b16": "BF16", "d64": "F64", "d64be": "F64", "h16": "F16", "h16be": "F16", "s32": "F32"}
order = sorted(["h16", "h16be", "d64", "d64be", "s32"]) + ["b16"]
joined = b"".join(got[name][2] for name in order)
for name in order:
    assert got[name][0] == stored[name], (name, got[name][0])
assert joined == want, "bytes differ"
print("ftlua reads h5py's " + ", ".join("%s as %s" % (n, stored[n]) for n in order) + ": the same bytes")
PY
echo "io_dtype_h5py: ok"
