"""trimlm's quantized formats (quant/qformat.h) and the scalar quantized GEMV
against an independent numpy implementation written from the documented
layouts, and the row formats against the `gguf` package's own quantizer.

  test_qformat_ref.py TOOL

TOOL is tests/test_qformat; `TOOL --dump DIR` writes a fixed (37, 576)
matrix, its row blocks and packed forms, a quantized activation and the
scalar GEMV outputs. Quantized bytes must match exactly (both sides do the
same float32 operations in the same order); the GEMV is compared with a
float64 dot of the dequantized operands under TOL_GEMV_F32.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

from testutil import check, round_half_away, summary

GROUP, ROWS_PER_TILE = 32, 16
# f32 GEMV vs float64: the int32 group sums are exact, each group adds one
# rounding of d_w*d_x and one of the fma, so the error is a few f32 ulps of
# sum |w_i x_i| per group, and they mostly cancel (measured ~4e-8).
TOL_GEMV_F32 = 1e-6

F32 = np.float32
BLOCK_Q8 = np.dtype([("d", "<f2"), ("qs", "i1", (32,))])
BLOCK_Q4 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
ACT = np.dtype([("d", "<f4"), ("sum", "<i4"), ("qs", "i1", (32,))])


def quantize_q8(w):
    b = w.reshape(-1, GROUP).astype(F32)
    d = (np.abs(b).max(axis=1, keepdims=True) / F32(127)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d).astype(F32)
    out = np.zeros(b.shape[0], BLOCK_Q8)
    out["d"] = d[:, 0].astype(np.float16)
    out["qs"] = round_half_away((b * inv).astype(F32))
    return out


def quantize_q4(w):
    b = w.reshape(-1, GROUP).astype(F32)
    imax = np.abs(b).argmax(axis=1)[:, None]  # first of equal magnitudes, as C's strict <
    m = np.take_along_axis(b, imax, axis=1)
    d = (m / F32(-8)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d).astype(F32)
    t = ((b * inv).astype(F32) + F32(8.5)).astype(F32)
    q = np.clip(np.trunc(t), 0, 15).astype(np.uint8)
    out = np.zeros(b.shape[0], BLOCK_Q4)
    out["d"] = d[:, 0].astype(np.float16)
    out["qs"] = q[:, :16] | (q[:, 16:] << 4)
    return out


def dequant_q8(blocks):
    return blocks["d"].astype(np.float64)[:, None] * blocks["qs"].astype(np.float64)


def dequant_q4(blocks):
    q = np.concatenate([blocks["qs"] & 15, blocks["qs"] >> 4], axis=1).astype(np.float64)
    return blocks["d"].astype(np.float64)[:, None] * (q - 8)


def pack(blocks, rows, n_in, kind):
    """The packed layout, written from its description in qformat.h."""
    ng = n_in // GROUP
    qb = 512 if kind == "q8" else 256
    tile_bytes = (ng * (qb + 32) + 63) // 64 * 64
    n_tiles = (rows + ROWS_PER_TILE - 1) // ROWS_PER_TILE
    out = np.zeros(n_tiles * tile_bytes, np.uint8)
    blocks = blocks.reshape(rows, ng)
    for row in range(n_tiles * ROWS_PER_TILE):
        t, r = divmod(row, ROWS_PER_TILE)
        base = t * tile_bytes
        for g in range(ng):
            if row < rows:
                blk = blocks[row, g]
                d_bits = np.frombuffer(blk["d"].tobytes(), np.uint8)
                qs = np.frombuffer(blk["qs"].tobytes(), np.uint8)
            else:  # padding row: scale 0, quants meaning 0
                d_bits = np.zeros(2, np.uint8)
                qs = np.zeros(32, np.uint8) if kind == "q8" else np.full(16, 0x88, np.uint8)
            q0 = base + g * qb
            if kind == "q8":
                for k in range(8):
                    for i in range(4):  # stored biased: int8 q as the byte q + 128
                        out[q0 + 64 * k + 4 * r + i] = (int(qs[4 * k + i]) ^ 0x80) & 0xFF
            else:
                for j in range(4):
                    for i in range(4):
                        # low nibble: input 4j+i, high: input 16+4j+i; the
                        # row block keeps the same pair in byte 4j+i
                        out[q0 + 64 * j + 4 * r + i] = qs[4 * j + i]
            s0 = base + ng * qb + g * 32 + 2 * r
            out[s0:s0 + 2] = d_bits
    return out.tobytes()


def quantize_act(x):
    b = x.reshape(-1, GROUP).astype(F32)
    d = (np.abs(b).max(axis=1) / F32(127)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d).astype(F32)
    q = np.rint((b * inv[:, None]).astype(F32)).astype(np.int64)  # half to even
    out = np.zeros(b.shape[0], ACT)
    out["d"], out["qs"], out["sum"] = d, q, q.sum(axis=1)
    return out


def main():
    tool = sys.argv[1]
    scratch = os.environ.get("TLM_TEST_OUT") or tempfile.gettempdir()
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        subprocess.run([tool, "--dump", d], check=True)
        rd = lambda name, dt: np.fromfile(os.path.join(d, name), dt)  # noqa: E731
        rows, n_in = map(int, open(os.path.join(d, "meta.txt")).read().split())
        w = rd("w.f32", F32).reshape(rows, n_in)
        x = rd("x.f32", F32)
        b8, b4 = rd("q8.blocks", BLOCK_Q8), rd("q4.blocks", BLOCK_Q4)
        p8 = open(os.path.join(d, "q8.packed"), "rb").read()
        p4 = open(os.path.join(d, "q4.packed"), "rb").read()
        xq = rd("xq.act", ACT)
        y8, y4 = rd("y_q8.f32", F32), rd("y_q4.f32", F32)

    want8, want4 = quantize_q8(w), quantize_q4(w)
    check("q8_g32 row blocks == numpy", b8.tobytes() == want8.tobytes())
    check("q4_g32 row blocks == numpy", b4.tobytes() == want4.tobytes())
    try:
        import gguf
        from gguf.quants import quantize
        QT = gguf.GGMLQuantizationType
        g8 = quantize(w, QT.Q8_0).tobytes()
        g4 = quantize(w, QT.Q4_0).tobytes()
        check("q8_g32 row blocks == gguf Q8_0 quantizer", b8.tobytes() == g8)
        check("q4_g32 row blocks == gguf Q4_0 quantizer", b4.tobytes() == g4)
    except ImportError:
        print("SKIP: gguf package not installed: no comparison with its quantizer")

    check("q8_g32_r16 packed bytes == numpy packing", p8 == pack(want8, rows, n_in, "q8"))
    check("q4_g32_r16 packed bytes == numpy packing", p4 == pack(want4, rows, n_in, "q4"))

    wantx = quantize_act(x)
    check("activation q8_g32 blocks == numpy", xq.tobytes() == wantx.tobytes())

    xd = (wantx["d"].astype(np.float64)[:, None] * wantx["qs"].astype(np.float64)).ravel()
    for name, y, wd in (("q8", y8, dequant_q8(want8)), ("q4", y4, dequant_q4(want4))):
        wd = wd.reshape(rows, n_in)
        ref = wd @ xd
        mag = np.abs(wd) @ np.abs(xd)
        err = np.abs(y.astype(np.float64) - ref) / np.maximum(mag, 1e-30)
        check(f"scalar gemv {name}_g32_r16 vs float64 dot (max rel err {err.max():.2e}, "
              f"tol {TOL_GEMV_F32:.0e})",
              bool(np.all(err <= TOL_GEMV_F32)))
        # quantization error against the exact f32 product, for the record
        exact = w.astype(np.float64) @ x.astype(np.float64)
        rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
        print(f"info  {name}: |y - y_f32| / |y_f32| = {rel:.4f}")

    sys.exit(summary())


if __name__ == "__main__":
    main()
