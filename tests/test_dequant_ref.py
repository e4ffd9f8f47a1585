"""The GGUF reader and GGML dequantizers against the independent `gguf`
package (GGUFReader, gguf.quants.dequantize).

  test_dequant_ref.py raw TOOL        every type on random valid blocks
  test_dequant_ref.py synthetic TOOL  a GGUFWriter file: metadata, directory, data
  test_dequant_ref.py model TOOL      the real default model: directory + ~20 tensors

TOOL is tests/tool_dequant. Dequantized values must match bit for bit: both
sides compute each value with the same float32 operations in the same order,
so any difference is a layout or arithmetic mistake, not rounding.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "py"))

import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402

from gguf_fixtures import random_blocks, run  # noqa: E402
from testutil import fail, real_model_path, scratch_dir  # noqa: E402

TOLERANCE_ULPS = 0  # bit-exact; see the module docstring

TYPES = [QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
         QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]


def compare(what, got, want):
    got = np.asarray(got, dtype=np.float32).ravel()
    want = np.asarray(want, dtype=np.float32).ravel()
    if got.shape != want.shape:
        fail(f"{what}: {got.size} values, expected {want.size}")
    if not np.all(np.isfinite(want)):
        fail(f"{what}: the reference has non-finite values (bad test input)")
    gi, wi = got.view(np.int32).astype(np.int64), want.view(np.int32).astype(np.int64)
    # ULP distance on the sign-magnitude integer line; +0 and -0 are 0 apart
    gi = np.where(gi < 0, -(gi & 0x7FFFFFFF), gi)
    wi = np.where(wi < 0, -(wi & 0x7FFFFFFF), wi)
    ulps = np.abs(gi - wi)
    if ulps.max() > TOLERANCE_ULPS:
        i = int(ulps.argmax())
        fail(f"{what}: element {i}: got {got[i]!r}, expected {want[i]!r} "
             f"({int((ulps > TOLERANCE_ULPS).sum())} of {got.size} differ)")


def dequant_raw(tool, qtype, blocks, out_dir):
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    n = blocks.shape[0] * block_size
    src, dst = os.path.join(out_dir, f"{qtype.name}.bin"), os.path.join(out_dir, f"{qtype.name}.f32")
    blocks.tofile(src)
    r = run([tool, "raw", qtype.name, str(n), src, dst])
    if r.returncode != 0:
        fail(f"tool_dequant raw {qtype.name}: {r.stderr.strip()}")
    return np.fromfile(dst, dtype=np.float32)


# ------------------------------------------------------------------- raw


def check_raw(tool):
    rng = np.random.default_rng(1234)
    out_dir = scratch_dir("gguf-dequant-raw")
    for qtype in TYPES:
        block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = 4096 // block_size * 8 if block_size > 1 else 4096
        blocks = random_blocks(rng, qtype, n_blocks)
        got = dequant_raw(tool, qtype, blocks, out_dir)
        want = gguf.quants.dequantize(blocks, qtype)
        compare(f"{qtype.name} random blocks", got, want)
        print(f"ok {qtype.name}: {got.size} values bit-exact")

    # Q8_K has no dequantizer in the gguf package: x = d (f32) * q (int8)
    n_blocks = 16
    d = (rng.standard_normal(n_blocks) * 0.01).astype(np.float32)
    qs = rng.integers(-128, 128, size=(n_blocks, 256)).astype(np.int8)
    bsums = rng.integers(0, 256, size=(n_blocks, 32)).astype(np.uint8)
    blocks = np.concatenate([d.view(np.uint8).reshape(n_blocks, 4), qs.view(np.uint8), bsums], axis=1)
    got = dequant_raw(tool, QT.Q8_K, blocks, out_dir)
    compare("Q8_K random blocks", got, d[:, None] * qs.astype(np.float32))
    print("ok Q8_K")

    # Quantized matrices, as a model file holds them: odd row counts, rows of
    # several blocks, values from the gguf package's own quantizer (which
    # implements the 32-value types, F16 and BF16; the K-quants raise
    # NotImplementedError there and are covered by the random blocks above).
    quantized = []
    for qtype in TYPES:
        block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
        row_len = 256 * 3 if block_size == 256 else 32 * 7
        for rows in (1, 7, 13):
            a = (rng.standard_normal((rows, row_len)) * rng.uniform(0.01, 3.0, (rows, 1))).astype(np.float32)
            try:
                q = gguf.quants.quantize(a, qtype)
            except NotImplementedError:
                break
            got = dequant_raw(tool, qtype, np.ascontiguousarray(q).view(np.uint8).reshape(-1, gguf.GGML_QUANT_SIZES[qtype][1]), out_dir)
            compare(f"{qtype.name} quantized {rows}x{row_len}", got, gguf.quants.dequantize(q, qtype))
        else:
            quantized.append(qtype.name)
    print(f"ok quantized matrices of 1, 7 and 13 rows bit-exact: {', '.join(quantized)}")
    if not {"Q4_0", "Q5_0", "Q8_0"} <= set(quantized):
        fail("the gguf package quantized none of Q4_0, Q5_0, Q8_0: nothing was checked")

    # a size that is not whole blocks is refused, not read past
    bad = os.path.join(out_dir, "short.bin")
    np.zeros(17, dtype=np.uint8).tofile(bad)
    if run([tool, "raw", "Q4_0", "32", bad, bad + ".f32"]).returncode == 0:
        fail("a 17-byte Q4_0 block was accepted")


# ----------------------------------------------------------------- info


def parse_info(text):
    info = {"kv": {}, "tensors": {}}
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] == "kv":
            info["kv"][bytes.fromhex(f[1]) if f[1] != "-" else b""] = (int(f[2]), f[3])
        elif f[0] == "tensor":
            info["tensors"][bytes.fromhex(f[1]).decode()] = dict(
                type=int(f[2]), ne=[int(x) for x in f[3].split(",")], offset=int(f[4]),
                nbytes=int(f[5]))
        else:
            info[f[0]] = int(f[1])
    return info


def hex_or_dash(b):
    return b.hex() if b else "-"


def reference_value_text(field):
    """The field's value formatted as tool_dequant info prints it."""
    vt = gguf.GGUFValueType
    main = field.types[0]

    def scalar(part, t):
        if t == vt.STRING:
            return hex_or_dash(part.tobytes())
        v = part.tolist()[0]
        if t == vt.BOOL:
            return str(int(bool(v)))
        if t == vt.FLOAT32:
            return "%.9g" % v
        if t == vt.FLOAT64:
            return "%.17g" % v
        return str(v)

    if main == vt.STRING:
        return scalar(field.parts[-1], vt.STRING)
    if main != vt.ARRAY:
        return scalar(field.parts[-1], main)
    # parts: key length, key, value type, element type, count, elements...
    elem, count = int(field.parts[3][0]), int(field.parts[4][0])
    if elem == vt.ARRAY:
        return f"{elem}:{count}:nested"
    items = [scalar(field.parts[i], vt(elem)) for i in field.data]
    return f"{elem}:{count}:" + ",".join(items)


def check_directory(tool, path):
    """tool_dequant info must agree with GGUFReader on every key, value,
    tensor name, type, shape and offset."""
    r = run([tool, "info", path])
    if r.returncode != 0:
        fail(f"tool_dequant info {path}: {r.stderr.strip()}")
    got = parse_info(r.stdout)
    ref = gguf.GGUFReader(path)
    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    if got["n_kv"] != len(fields) or set(got["kv"]) != {k.encode() for k in fields}:
        fail(f"{path}: metadata keys differ: {sorted(got['kv'])[:5]}... vs {sorted(fields)[:5]}...")
    for key, field in fields.items():
        gtype, gtext = got["kv"][key.encode()]
        if gtype != int(field.types[0]):
            fail(f"{path}: key {key}: type {gtype}, expected {int(field.types[0])}")
        want = reference_value_text(field)
        if gtext != want:
            fail(f"{path}: key {key}: value {gtext[:80]!r}, expected {want[:80]!r}")
    if got["n_tensors"] != len(ref.tensors):
        fail(f"{path}: {got['n_tensors']} tensors, expected {len(ref.tensors)}")
    for t in ref.tensors:
        g = got["tensors"].get(t.name)
        if g is None:
            fail(f"{path}: tensor {t.name} missing")
        if g["type"] != int(t.tensor_type) or g["ne"] != [int(x) for x in t.shape]:
            fail(f"{path}: tensor {t.name}: type/shape {g['type']} {g['ne']}, expected "
                 f"{int(t.tensor_type)} {list(t.shape)}")
        if ref.data_offset + g["offset"] != t.data_offset or g["nbytes"] != t.n_bytes:
            fail(f"{path}: tensor {t.name}: offset/size {g['offset']} {g['nbytes']}, expected "
                 f"{t.data_offset - ref.data_offset} {t.n_bytes}")
    print(f"ok directory of {os.path.basename(path)}: {len(fields)} keys, {len(ref.tensors)} tensors")
    return ref


def check_tensor(tool, path, t, out_dir):
    dst = os.path.join(out_dir, "tensor.f32")
    r = run([tool, "tensor", path, t.name, dst])
    if r.returncode != 0:
        fail(f"tool_dequant tensor {t.name}: {r.stderr.strip()}")
    got = np.fromfile(dst, dtype=np.float32)
    want = gguf.quants.dequantize(t.data, t.tensor_type)
    compare(f"{os.path.basename(path)}: {t.name} ({t.tensor_type.name})", got, want)


# ------------------------------------------------------------ synthetic


def check_synthetic(tool):
    rng = np.random.default_rng(99)
    out_dir = scratch_dir("gguf-reader-ref")
    for alignment in (None, 64):
        path = os.path.join(out_dir, f"synthetic-{alignment or 32}.gguf")
        w = gguf.GGUFWriter(path, "llama")
        if alignment:
            w.add_custom_alignment(alignment)
        vt = gguf.GGUFValueType
        w.add_key_value("t.u8", 250, vt.UINT8)
        w.add_key_value("t.i8", -100, vt.INT8)
        w.add_key_value("t.u16", 65000, vt.UINT16)
        w.add_key_value("t.i16", -32000, vt.INT16)
        w.add_key_value("t.u32", 4_000_000_000, vt.UINT32)
        w.add_key_value("t.i32", -2_000_000_000, vt.INT32)
        w.add_key_value("t.f32", 3.25, vt.FLOAT32)
        w.add_key_value("t.bool", True, vt.BOOL)
        w.add_key_value("t.u64", 1 << 50, vt.UINT64)
        w.add_key_value("t.i64", -(1 << 50), vt.INT64)
        w.add_key_value("t.f64", 1.0 / 3.0, vt.FLOAT64)
        w.add_key_value("t.str", "h\u00e9llo \u4e16\u754c", vt.STRING)
        w.add_key_value("t.empty_str", "", vt.STRING)
        w.add_array("t.strs", ["a", "", "\u0120the", "x" * 300])
        w.add_array("t.floats", [0.5, -1.25, 1e-3])
        w.add_array("t.ints", [1, -2, 3, 1 << 20])
        w.add_array("t.nested", [[1, 2], [3, 4, 5]])
        for i, qtype in enumerate(TYPES):
            block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
            row = 2 * max(block_size, 32)
            blocks = random_blocks(rng, qtype, (3 * row) // block_size).reshape(3, -1)
            w.add_tensor(f"t{i}.{qtype.name}", blocks, raw_dtype=qtype)
        w.add_tensor("vec", rng.standard_normal(5).astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        ref = check_directory(tool, path)
        for t in ref.tensors:
            check_tensor(tool, path, t, out_dir)
        print(f"ok {len(ref.tensors)} tensors of {os.path.basename(path)} bit-exact")


# ---------------------------------------------------------------- model


def check_model(tool):
    path = real_model_path()
    if not os.path.exists(path):
        fail(f"the real model is not at {path} (run `trimlm pull` or set TLM_MODEL_PATH)")
    ref = check_directory(tool, path)
    by_type = {}
    for t in ref.tensors:
        by_type.setdefault(t.tensor_type, []).append(t)
    # every type, first/middle/last layers, ~20 tensors in all
    sample = {ts[0].name: ts[0] for ts in by_type.values()}
    for t in ref.tensors:
        if any(t.name.startswith(f"blk.{i}.") for i in (0, 14, 29)) and len(sample) < 20:
            sample[t.name] = t
    out_dir = scratch_dir("gguf-dequant-model")
    for t in sample.values():
        check_tensor(tool, path, t, out_dir)
    print(f"ok {len(sample)} tensors of the real model bit-exact "
          f"({', '.join(sorted(q.name for q in by_type))})")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("raw", "synthetic", "model"):
        fail("usage: test_dequant_ref.py raw|synthetic|model TOOL")
    tool = sys.argv[2]
    {"raw": check_raw, "synthetic": check_synthetic, "model": check_model}[sys.argv[1]](tool)


if __name__ == "__main__":
    main()
