#!/usr/bin/python3
"""Writes the file-format fixtures of tests/spec/io_spec.lua into tests/fixtures/io/.

PNGs are encoded here byte by byte (struct + zlib: every colour type and bit depth,
palettes with and without tRNS, the five row filters, Adam7 interlacing), so the
expected pixel values come from this script, not from the decoder under test. The
HDF5 files are written by h5py, the IDX files by hand. Broken files (truncated, bad
checksum, wrong magic) go next to them. expected.lua holds the values to compare with.

Run: /usr/bin/python3 tests/gen/io.py   (needs numpy and h5py)
"""
import gzip
import os
import random
import struct
import zlib

import h5py
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "io")

# ---- PNG encoder ----------------------------------------------------------------

GRAY, RGB, PALETTE, GRAY_ALPHA, RGBA = 0, 2, 3, 4, 6
SAMPLES = {GRAY: 1, RGB: 3, PALETTE: 1, GRAY_ALPHA: 2, RGBA: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def pack_row(samples, depth):
    """A row of sample values -> bytes (sub-byte depths packed MSB first)."""
    if depth == 16:
        return b"".join(struct.pack(">H", v) for v in samples)
    if depth == 8:
        return bytes(samples)
    per_byte = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per_byte):
        byte = 0
        group = samples[i:i + per_byte]
        for j, v in enumerate(group):
            byte |= v << (8 - depth * (j + 1))
        out.append(byte)
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_row(kind, raw, prior, bpp):
    out = bytearray([kind])
    for i, x in enumerate(raw):
        a = raw[i - bpp] if i >= bpp else 0
        b = prior[i] if prior else 0
        c = prior[i - bpp] if prior and i >= bpp else 0
        pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][kind]
        out.append((x - pred) & 0xFF)
    return bytes(out)


def encode_rows(pixels, width, height, channels, depth, row_no):
    """Rows of pixels (lists of channel tuples) -> filtered scanlines; filter types
    cycle with the row number so that all five are exercised."""
    bpp = max(1, channels * depth // 8)
    data, prior = bytearray(), None
    for y in range(height):
        raw = pack_row([s for px in pixels[y] for s in px], depth)
        data += filter_row((row_no + y) % 5, raw, prior, bpp)
        prior = raw
    return bytes(data)


def png(width, height, depth, color, pixels, palette=None, trns=None, interlace=False):
    channels = SAMPLES[color]
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 1 if interlace else 0)
    if interlace:
        data = bytearray()
        for p, (x0, y0, dx, dy) in enumerate(ADAM7):
            sub = [[pixels[y][x] for x in range(x0, width, dx)] for y in range(y0, height, dy)]
            if sub and sub[0]:
                data += encode_rows(sub, len(sub[0]), len(sub), channels, depth, p)
        data = bytes(data)
    else:
        data = encode_rows(pixels, width, height, channels, depth, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if palette is not None:
        out += chunk(b"PLTE", bytes(v for rgb in palette for v in rgb))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    # Split the image data over two IDAT chunks, as encoders may.
    z = zlib.compress(data, 9)
    out += chunk(b"IDAT", z[: len(z) // 2]) + chunk(b"IDAT", z[len(z) // 2:])
    return out + chunk(b"IEND", b"")


def png_cases():
    """(name, png bytes, expected [C][H][W] integer values, the value that means 1.0)."""
    rng = random.Random(1234)
    W, H = 7, 5
    cases = []

    def grid(w, h, channels, maxv):
        return [[tuple(rng.randint(0, maxv) for _ in range(channels)) for _ in range(w)] for _ in range(h)]

    def planes(pixels, channels):
        return [[[px[c] for px in row] for row in pixels] for c in range(channels)]

    for depth in (1, 2, 4, 8, 16):
        maxv = (1 << depth) - 1
        px = grid(W, H, 1, maxv)
        cases.append(("gray%d" % depth, png(W, H, depth, GRAY, px), planes(px, 1), maxv))
    for depth in (8, 16):
        maxv = (1 << depth) - 1
        for color, name, ch in ((GRAY_ALPHA, "gray_alpha", 2), (RGB, "rgb", 3), (RGBA, "rgba", 4)):
            px = grid(W, H, ch, maxv)
            cases.append(("%s%d" % (name, depth), png(W, H, depth, color, px), planes(px, ch), maxv))

    # tRNS on gray / RGB: one colour becomes transparent, everything else opaque.
    for depth in (8, 16):
        maxv = (1 << depth) - 1
        px = grid(W, H, 1, 3)
        px = [[(v[0] * (maxv // 3),) for v in row] for row in px]
        key = maxv // 3
        alpha = [[(0 if p[0] == key else maxv,) for p in row] for row in px]
        cases.append(("gray%d_trns" % depth, png(W, H, depth, GRAY, px, trns=struct.pack(">H", key)),
                      planes(px, 1) + planes(alpha, 1), maxv))
    px = [[tuple(rng.choice((0, 255)) for _ in range(3)) for _ in range(W)] for _ in range(H)]
    key = (255, 0, 255)
    px[1][2] = key
    alpha = [[(0 if p == key else 255,) for p in row] for row in px]
    cases.append(("rgb8_trns", png(W, H, 8, RGB, px, trns=struct.pack(">HHH", *key)),
                  planes(px, 3) + planes(alpha, 1), 255))

    # Palettes: indices of 1..8 bits expand to 8-bit RGB; tRNS (possibly shorter than
    # the palette) adds alpha, 255 for entries it does not list.
    for depth in (1, 2, 4, 8):
        n = min(1 << depth, 12)
        palette = [tuple(rng.randint(0, 255) for _ in range(3)) for _ in range(n)]
        idx = [[rng.randrange(n) for _ in range(W)] for _ in range(H)]
        rgb = [[palette[i] for i in row] for row in idx]
        cases.append(("palette%d" % depth, png(W, H, depth, PALETTE, [[(i,) for i in row] for row in idx], palette=palette),
                      planes(rgb, 3), 255))
        if depth in (2, 8):
            trns = bytes(rng.randint(0, 255) for _ in range(n - 1))
            alpha = [[(trns[i] if i < len(trns) else 255,) for i in row] for row in idx]
            cases.append(("palette%d_trns" % depth,
                          png(W, H, depth, PALETTE, [[(i,) for i in row] for row in idx], palette=palette, trns=trns),
                          planes(rgb, 3) + planes(alpha, 1), 255))

    # Adam7 interlacing, big enough for all seven passes to be non-empty.
    IW, IH = 11, 9
    px = grid(IW, IH, 3, 255)
    cases.append(("rgb8_interlaced", png(IW, IH, 8, RGB, px, interlace=True), planes(px, 3), 255))
    px = grid(IW, IH, 1, 3)
    cases.append(("gray2_interlaced", png(IW, IH, 2, GRAY, px, interlace=True), planes(px, 1), 3))
    return cases


# ---- Lua output -------------------------------------------------------------------

def lua_value(v, indent=""):
    if isinstance(v, dict):
        inner = indent + "  "
        items = ",\n".join("%s[%s] = %s" % (inner, lua_value(k), lua_value(v[k], inner)) for k in sorted(v))
        return "{\n%s,\n%s}" % (items, indent) if v else "{}"
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua_value(x, indent) for x in v) + "}"
    if isinstance(v, str):
        return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(v, float):
        return repr(v)
    return str(int(v))


def flat(nested):
    return [int(x) for x in np.asarray(nested).reshape(-1)]


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {"png": {}, "idx": {}, "h5": {}}

    # ---- PNG -------------------------------------------------------------------
    for name, data, planes, maxv in png_cases():
        write(name + ".png", data)
        c, h, w = len(planes), len(planes[0]), len(planes[0][0])
        expected["png"][name] = {"shape": [c, h, w], "max": maxv, "values": flat(planes)}
    good = png_cases()[3][1]                                   # gray8
    write("truncated.png", good[: len(good) * 2 // 3])         # cut inside the image data
    bad_crc = bytearray(good)
    idat = bytes(bad_crc).index(b"IDAT")
    length = struct.unpack(">I", bad_crc[idat - 4:idat])[0]
    bad_crc[idat + 4 + length] ^= 0xFF                         # the stored CRC of the first IDAT
    write("bad_crc.png", bytes(bad_crc))
    bad_data = bytearray(good)
    bad_data[idat + 6] ^= 0xFF                                 # a deflate byte, CRC recomputed
    bad_data[idat + 4 + length:idat + 8 + length] = struct.pack(
        ">I", zlib.crc32(bytes(bad_data[idat:idat + 4 + length])) & 0xFFFFFFFF)
    write("bad_data.png", bytes(bad_data))
    write("not_a.png", b"this is a text file, not a PNG image\n")

    # ---- IDX -------------------------------------------------------------------
    rng = np.random.RandomState(7)
    images = rng.randint(0, 256, size=(3, 4, 5)).astype(np.uint8)
    labels = np.array([9, 0, 3, 7, 1], dtype=np.uint8)
    img_bytes = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 3, 4, 5) + images.tobytes()
    lab_bytes = struct.pack(">BBBBI", 0, 0, 0x08, 1, 5) + labels.tobytes()
    write("images-idx3-ubyte", img_bytes)
    write("images-idx3-ubyte.gz", gzip.compress(img_bytes, mtime=0))
    write("labels-idx1-ubyte.gz", gzip.compress(lab_bytes, mtime=0))
    expected["idx"]["images"] = {"shape": [3, 4, 5], "values": flat(images)}
    expected["idx"]["labels"] = {"shape": [5], "values": flat(labels)}
    short = img_bytes[:-7]                                     # 53 of 60 data bytes
    write("truncated-idx3-ubyte", short)
    gz = gzip.compress(img_bytes, mtime=0)
    write("truncated-idx3-ubyte.gz", gz[: len(gz) - 12])       # cut inside the deflate stream
    bad = bytearray(gz)
    bad[-6] ^= 0xFF                                            # corrupt the CRC32 trailer
    write("bad_crc-idx3-ubyte.gz", bytes(bad))
    write("bad_magic-idx3-ubyte", b"\x1f\x00\x08\x03" + img_bytes[4:])
    write("trailing-idx3-ubyte", img_bytes + b"\x00\x01")

    # A miniature Fashion-MNIST folder: train gzip-compressed, test plain.
    mini = os.path.join(OUT, "fashion_mini")
    os.makedirs(mini, exist_ok=True)
    for split, n, compress in (("train", 3, True), ("t10k", 2, False)):
        imgs = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labs = np.array([9, 0, 3][:n], dtype=np.uint8)
        ib = struct.pack(">BBBBIII", 0, 0, 0x08, 3, n, 28, 28) + imgs.tobytes()
        lb = struct.pack(">BBBBI", 0, 0, 0x08, 1, n) + labs.tobytes()
        suffix = ".gz" if compress else ""
        pack = (lambda b: gzip.compress(b, mtime=0)) if compress else (lambda b: b)
        write(os.path.join("fashion_mini", "%s-images-idx3-ubyte%s" % (split, suffix)), pack(ib))
        write(os.path.join("fashion_mini", "%s-labels-idx1-ubyte%s" % (split, suffix)), pack(lb))
        expected["idx"]["fashion_mini_" + split] = {
            "shape": [n, 28, 28], "first_pixels": flat(imgs[0, 0, :28]), "labels": flat(labs)}

    # ---- HDF5 ------------------------------------------------------------------
    path = os.path.join(OUT, "h5py_plain.h5")
    arrays = {
        "layer1/0/conv1/weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8,
        "layer1/0/conv1/bias": np.array([-1.5, 0.25, 3.0], dtype=np.float64),
        "head/counts": np.array([[1, -2], [3, 4]], dtype=np.int32),
        "head/ids": np.array([5, 6, 7], dtype=np.int64),
        "pixels": np.array([0, 128, 255], dtype=np.uint8),
        "scale": np.float64(0.5),
    }
    with h5py.File(path, "w", track_order=False) as f:
        for name, a in arrays.items():
            f.create_dataset(name, data=a, compression="gzip" if name == "head/ids" else None)
        f.attrs["step"] = 1200
        f.attrs["lr"] = 0.125
        f.attrs["note"] = "written by h5py"
        f.attrs["vector"] = np.array([1.0, 2.0])               # not a scalar: skipped
    for name, a in arrays.items():
        a = np.asarray(a)
        expected["h5"][name.replace("/", ".")] = {
            "shape": list(a.shape),
            "dtype": {"f2": "float16", "f4": "float32", "f8": "float64"}.get(a.dtype.str[1:], "int64"),
            "values": [float(x) for x in a.reshape(-1)],
        }
    expected["h5_meta"] = {"step": 1200, "lr": 0.125, "note": "written by h5py"}
    good = open(path, "rb").read()
    write("truncated.h5", good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[8:200] = bytes(range(192))                         # keep the signature, smash the superblock
    write("corrupt.h5", bytes(corrupt))
    write("not_hdf5.h5", b"plain text pretending to be a checkpoint\n" * 20)

    with open(os.path.join(OUT, "expected.lua"), "w") as f:
        f.write("-- Generated by tests/gen/io.py; do not edit.\n")
        f.write("return " + lua_value(expected) + "\n")


if __name__ == "__main__":
    main()
