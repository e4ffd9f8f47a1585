"""`trimlm convert --to gguf`: the exported GGUF read back with gguf-py
(an independent reader), run by trimlm, and loaded by llama.cpp.

    test_gguf_export.py synthetic TOOL_LOGITS
        tiny synthetic models (llama with GQA, qwen2 with q/k/v biases and
        rotate-half RoPE, tied embeddings, linear RoPE scaling):
        - every --type: keys, tensor names / shapes / types; float data equal
          to the source's values (Q/K rows of rotate-half sources permuted as
          llama.cpp's converter does); Q8_0 / Q4_0 blocks byte-equal to the
          .tlm of the same conversion (its r16 tiles unpacked here from the
          layout in quant/qformat.h) and to gguf-py's own quantizer;
        - pruned exports (some attention and one MLP removed): the "deci"
          form's per-layer arrays and tensors; trimlm's logits on the GGUF
          equal its logits on the .tlm with the same drops and a numpy
          forward pass that skips those sublayers;
        - a .tlm source exports the same bytes as its GGUF source;
        - trimlm's loader on hand-written deci files (a layer without MLP;
          malformed or unsupported per-layer arrays);
        - bad cases: unknown --to, unwritable output, a write that runs out
          of room (a file-size limit), layer 0's attention removed, sources
          with no GGUF tokenizer, --keep-wide naming nothing; nothing left
          behind.
    test_gguf_export.py real
        llama.cpp's llama-perplexity and `trimlm eval --ppl` on the same
        files: the synthetic exports (mean log-likelihood within 0.1% for f32,
        1% quantized), then SmolLM2-135M exported int8 unpruned and with 4
        attention sublayers removed (perplexity within 1%). Skips (exit 77)
        when llama.cpp's tools are
        missing (~/.cache/trimlm/llama.cpp-0.3.36/bin or $TLM_LLAMACPP_BIN;
        bench/compare-llamacpp --build-only builds them).
"""

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys

# Sources and exports are compared as convert sees a GGUF: widened to f32
# (the default in-place load rounds activations to int8).
os.environ["TRIMLM_GGUF_F32"] = "1"

import numpy as np

import gguf
import ref_llama
import synth_gguf
from testutil import check, read_tlm_tensors, summary
import testutil

TRIMLM = os.environ.get("TRIMLM", "trimlm")
ROOT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "gguf_export")
SKIP = 77

GT = gguf.GGMLQuantizationType
TYPE_OF = {"f32": GT.F32, "f16": GT.F16, "bf16": GT.BF16, "int8": GT.Q8_0, "int4": GT.Q4_0}


def run(args, timeout=900):
    return testutil.run([TRIMLM] + args, timeout)


def convert(src, dst, typ, extra=()):
    rc, out, err = run(["convert", src, "-o", dst, "--type", typ, "--no-calib", *extra])
    if rc != 0:
        raise RuntimeError(f"convert {src} -> {dst} ({typ} {' '.join(extra)}): {err.strip()}")


def tool_logits(tool, model, tokens, out):
    return testutil.tool_logits(tool, model, tokens, out).reshape(len(tokens), -1)


def unpack_r16(dtype, raw, rows, cols):
    """GGML Q8_0 / Q4_0 row blocks (rows, cols/32 * block bytes) from a
    q8_g32_r16 / q4_g32_r16 packed matrix, following quant/qformat.h:
    per 16-row tile and 32-input group, QB quant bytes (q8: byte 64k+4r+i =
    row r's input 4k+i biased by 0x80; q4: byte 64j+4r+i = row r's inputs
    4j+i (low nibble) and 16+4j+i (high)), then 16 f16 scales."""
    q8 = dtype == 16
    qb = 512 if q8 else 256
    ng = cols // 32
    tile = -(-ng * (qb + 32) // 64) * 64
    n_tiles = -(-rows // 16)
    raw = np.frombuffer(raw, dtype=np.uint8)[:n_tiles * tile].reshape(n_tiles, tile)
    quants = raw[:, :ng * qb].reshape(n_tiles, ng, qb)
    scales = raw[:, ng * qb:ng * qb + ng * 32].reshape(n_tiles, ng, 16, 2)
    if q8:
        # (tile, group, k, r, i) -> (tile, r, group, k, i): 32 inputs 4k+i
        q = quants.reshape(n_tiles, ng, 8, 16, 4).transpose(0, 3, 1, 2, 4).reshape(n_tiles, 16, ng, 32)
        q = q ^ 0x80
    else:
        # (tile, group, j, r, i) -> (tile, r, group, j, i): qs byte 4j+i
        q = quants.reshape(n_tiles, ng, 4, 16, 4).transpose(0, 3, 1, 2, 4).reshape(n_tiles, 16, ng, 16)
    d = scales.transpose(0, 2, 1, 3)                                   # (tile, r, group, 2)
    blocks = np.concatenate([d, q], axis=3).reshape(n_tiles * 16, -1)
    return blocks[:rows].tobytes()


# ------------------------------------------------------- numpy reference


def permute_norm(a, n_heads):
    return synth_gguf.permute_for_norm_rope(a, n_heads)


def forward_skipping(hp, w, tokens, drop_attn=(), drop_mlp=()):
    """The llama forward pass (ref_llama's math) over GGUF-named weights w
    (rows of Q/K in hp.rope_style), leaving out the given sublayers."""
    inv_freq = ref_llama.rope_inv_freq(hp)
    tokens = np.asarray(tokens)
    n = len(tokens)
    pos = np.arange(n)
    x = w["token_embd.weight"][tokens].astype(np.float64)
    group = hp.n_head // hp.n_head_kv
    for li in range(hp.n_layer):
        p = f"blk.{li}."
        if li not in drop_attn:
            h = ref_llama.rms_norm(x, w[p + "attn_norm.weight"], hp.eps)
            q, k, v = (h @ w[p + "attn_q.weight"].T, h @ w[p + "attn_k.weight"].T,
                       h @ w[p + "attn_v.weight"].T)
            if p + "attn_q.bias" in w:
                q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
            q = ref_llama.apply_rope(q.reshape(n, hp.n_head, hp.head_dim), pos, inv_freq, hp)
            k = ref_llama.apply_rope(k.reshape(n, hp.n_head_kv, hp.head_dim), pos, inv_freq, hp)
            v = v.reshape(n, hp.n_head_kv, hp.head_dim)
            K, V = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
            s = np.einsum("nhd,thd->hnt", q, K) / math.sqrt(hp.head_dim)
            s = np.where((pos[None, :] > pos[:, None])[None], -np.inf, s)
            att = np.einsum("hnt,thd->nhd", ref_llama.softmax(s), V).reshape(n, -1)
            x = x + att @ w[p + "attn_output.weight"].T
        if li not in drop_mlp:
            h = ref_llama.rms_norm(x, w[p + "ffn_norm.weight"], hp.eps)
            x = x + (ref_llama.silu(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)) \
                @ w[p + "ffn_down.weight"].T
    out = w.get("output.weight", w["token_embd.weight"])
    return ref_llama.rms_norm(x, w["output_norm.weight"], hp.eps) @ out.T


def hparams(arch, n_embd, n_layer, n_head, n_head_kv, rope_scaling=None):
    return ref_llama.HParams(arch=arch, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                             n_head_kv=n_head_kv, head_dim=n_embd // n_head, eps=1e-5,
                             theta=10000.0, rope_dim=n_embd // n_head,
                             rope_style="norm" if arch == "llama" else "neox",
                             scaling=rope_scaling, freq_factors=None)


def gguf_weights(path):
    """{name: float64 array (out, in)} of every tensor of a GGUF (gguf-py)."""
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        out[t.name] = a.reshape(-1) if len(t.shape) == 1 else a.reshape(-1, int(t.shape[0]))
    return r, out


def field(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


# ----------------------------------------------------------- synthetic


CASES = [
    # name, write_gguf arguments
    ("llama-gqa", dict(arch="llama", n_layer=4, n_head=4, n_head_kv=2, seed=1,
                       rope_scaling=("linear", 2.0))),
    ("qwen2-bias-tied", dict(arch="qwen2", n_layer=4, tied=True, n_embd=96, n_head=6, n_head_kv=2,
                             n_ff=128, seed=3)),
]
TOKENS = [5, 300, 17, 42, 260, 99, 1, 7, 128, 64, 33, 250]


def expected_source(weights, kw):
    """The source's weights as the GGUF must hold them: GGUF names, Q/K rows
    (and biases) in adjacent-pair order."""
    out = dict(weights)
    if kw["arch"] == "qwen2":
        for name in list(out):
            if ".attn_q." in name:
                out[name] = permute_norm(out[name], kw["n_head"])
            elif ".attn_k." in name:
                out[name] = permute_norm(out[name], kw["n_head_kv"])
    return out


def check_export(case, kw, src, weights, typ):
    dst = os.path.join(ROOT, f"{case}-{typ}.gguf")
    tlm = os.path.join(ROOT, f"{case}-{typ}.tlm")
    convert(src, dst, typ)  # --to inferred from the .gguf extension
    convert(src, tlm, typ)
    r = gguf.GGUFReader(dst)
    want = expected_source(weights, kw)
    n_embd = kw.get("n_embd", 64)
    check(f"{case}/{typ}: llama architecture and keys",
          field(r, "general.architecture") == "llama"
          and field(r, "llama.block_count") == kw["n_layer"]
          and field(r, "llama.embedding_length") == n_embd
          and field(r, "llama.attention.head_count") == kw["n_head"]
          and field(r, "llama.attention.head_count_kv") == kw["n_head_kv"]
          and field(r, "llama.feed_forward_length") == kw.get("n_ff", 96)
          and field(r, "llama.rope.dimension_count") == n_embd // kw["n_head"]
          and field(r, "tokenizer.ggml.model") == "gpt2"
          and len(field(r, "tokenizer.ggml.tokens")) == 320
          and (kw.get("rope_scaling") is None
               or (field(r, "llama.rope.scaling.type") == "linear"
                   and field(r, "llama.rope.scaling.factor") == 2.0)),
          {k: field(r, k) for k in r.fields if k.startswith(("general.", "llama."))})
    names = {t.name: t for t in r.tensors}
    check(f"{case}/{typ}: tensor names", set(names) == set(want),
          f"extra {set(names) - set(want)}, missing {set(want) - set(names)}")
    tlm_t = read_tlm_tensors(tlm)
    bad = []
    for name, a in want.items():
        t = names.get(name)
        if t is None:
            continue
        rows = a.shape[0] if a.ndim == 2 else 1
        cols = a.shape[-1]
        want_type = GT.F32 if a.ndim == 1 else TYPE_OF[typ]
        if typ == "int4" and name in ("token_embd.weight", "output.weight"):
            want_type = GT.Q8_0
        if t.tensor_type != want_type or list(t.shape) != ([cols, rows] if a.ndim == 2 else [cols]):
            bad.append(f"{name}: {t.tensor_type.name} {list(t.shape)}")
            continue
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(a.shape)
        if want_type == GT.F32:
            ok = np.array_equal(got, a.astype(np.float32))
        elif want_type == GT.F16:
            ok = np.array_equal(got, a.astype(np.float16).astype(np.float32))
        elif want_type == GT.BF16:
            ok = np.array_equal(t.data.view(np.uint16).reshape(-1), bf16_bits(a).reshape(-1))
        else:
            raw = bytes(t.data.tobytes())
            dt, trows, tcols, traw = tlm_t[name]
            from_tlm = unpack_r16(dt, traw, trows, tcols)
            # the .tlm stores Q/K in the source's row order
            if kw["arch"] == "qwen2" and (".attn_q." in name or ".attn_k." in name):
                heads = kw["n_head"] if ".attn_q." in name else kw["n_head_kv"]
                blk = np.frombuffer(from_tlm, np.uint8).reshape(trows, -1)
                from_tlm = permute_norm(blk, heads).tobytes()
            ref = gguf.quants.quantize(a.astype(np.float32), want_type).tobytes()
            ok = raw == from_tlm and raw == ref
            if not ok:
                bad.append(f"{name}: blocks differ (vs .tlm {raw == from_tlm}, vs gguf-py {raw == ref})")
                continue
        if not ok:
            bad.append(f"{name}: values differ")
    check(f"{case}/{typ}: tensor types, shapes and data", not bad, "; ".join(bad[:6]))
    return dst, tlm


def bf16_bits(a):
    x = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16).astype(np.uint16)


def synthetic(tool):
    for case, kw in CASES:
        src = os.path.join(ROOT, f"{case}.gguf")
        weights = synth_gguf.write_gguf(src, **kw)
        hp = hparams(kw["arch"], kw.get("n_embd", 64), kw["n_layer"], kw["n_head"], kw["n_head_kv"],
                     kw.get("rope_scaling"))
        ref_full = forward_skipping(hp, {k: v.astype(np.float64) for k, v in weights.items()}, TOKENS)
        for typ in ("f32", "f16", "bf16", "int8", "int4"):
            dst, tlm = check_export(case, kw, src, weights, typ)
            # trimlm runs its export like any GGUF
            got = tool_logits(tool, dst, TOKENS, os.path.join(ROOT, f"{case}-{typ}.bin"))
            _, w = gguf_weights(dst)
            hp_n = hparams("llama", hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.scaling)
            ref = forward_skipping(hp_n, w, TOKENS)
            err = float(np.abs(got - ref).max() / np.abs(ref).max())
            check(f"{case}/{typ}: trimlm on the GGUF = numpy on its weights (rel {err:.1e})",
                  err < 1e-4)
            if typ == "f32":
                err = float(np.abs(ref - ref_full).max() / np.abs(ref_full).max())
                check(f"{case}/f32: export computes what the source does (rel {err:.1e})", err < 1e-9)
        pruned(tool, case, kw, src, weights, hp)
        from_tlm(case)
    bad_cases()


def from_tlm(case):
    """A .tlm source (quantized matrices unpacked, not re-quantized; sublayers
    it lacks stay absent) exports the same file as the original source."""
    for name in (f"{case}-int8", f"{case}-int4", f"{case}-pruned-int8"):
        typ = "int4" if "int4" in name else "int8"
        dst = os.path.join(ROOT, f"{name}-via-tlm.gguf")
        convert(os.path.join(ROOT, f"{name}.tlm"), dst, typ)
        with open(dst, "rb") as f, open(os.path.join(ROOT, f"{name}.gguf"), "rb") as g:
            same = f.read() == g.read()
        check(f"{name}: exported from its .tlm = exported from the GGUF source (byte-equal)", same)


def pruned(tool, case, kw, src, weights, hp):
    drop_attn, drop_mlp = (1, 3), (2,)
    spec = f"attn:{','.join(map(str, drop_attn))} mlp:{','.join(map(str, drop_mlp))}"
    ref = forward_skipping(hp, {k: v.astype(np.float64) for k, v in weights.items()}, TOKENS,
                           drop_attn, drop_mlp)
    for typ in ("f32", "int8"):
        dst = os.path.join(ROOT, f"{case}-pruned-{typ}.gguf")
        tlm = os.path.join(ROOT, f"{case}-pruned-{typ}.tlm")
        convert(src, dst, typ, ["--drop-list", spec, "--to", "gguf"])
        convert(src, tlm, typ, ["--drop-list", spec])
        r, w = gguf_weights(dst)
        NL = kw["n_layer"]
        heads = [0 if i in drop_attn else kw["n_head"] for i in range(NL)]
        ff = [kw.get("n_ff", 96) if i not in drop_mlp else (32 if i not in drop_attn else 0)
              for i in range(NL)]
        check(f"{case}/pruned-{typ}: deci per-layer arrays",
              field(r, "general.architecture") == "deci"
              and field(r, "deci.attention.head_count") == heads
              and field(r, "deci.attention.head_count_kv") == [0 if h == 0 else kw["n_head_kv"] for h in heads]
              and field(r, "deci.feed_forward_length") == ff
              and field(r, "trimlm.removed_mlp") == [i in drop_mlp and i not in drop_attn for i in range(NL)],
              {k: field(r, k) for k in r.fields if k.startswith(("deci.", "trimlm."))})
        absent = [n for n in w if any(n.startswith(f"blk.{i}.attn_") for i in drop_attn)]
        placeholder = [n for n in w if n.startswith(f"blk.{drop_mlp[0]}.ffn_")]
        check(f"{case}/pruned-{typ}: no attention tensors for removed layers; zero placeholder MLP",
              not absent and len(placeholder) == 4 and all(not w[n].any() for n in placeholder),
              f"attention {absent}, placeholder {[(n, w[n].shape) for n in placeholder]}")
        got = tool_logits(tool, dst, TOKENS, os.path.join(ROOT, f"{case}-pruned-{typ}.bin"))
        got_tlm = tool_logits(tool, tlm, TOKENS, os.path.join(ROOT, f"{case}-pruned-{typ}-tlm.bin"))
        scale = np.abs(ref).max()
        if typ == "f32":
            err = float(np.abs(got - ref).max() / scale)
            check(f"{case}/pruned-f32: trimlm on the GGUF = numpy skipping those sublayers "
                  f"(rel {err:.1e})", err < 1e-4)
            # bit-equal when the rows are stored alike; a rotate-half source's
            # .tlm keeps its order, the GGUF the permuted one (other sums)
            err = float(np.abs(got - got_tlm).max() / scale)
            same = np.array_equal(got, got_tlm) if kw["arch"] == "llama" else err < 1e-5
            check(f"{case}/pruned-f32: trimlm on the GGUF = trimlm on the .tlm (rel {err:.1e})", same)
        else:
            # the reference skips the MLP the zero placeholder stands for
            ref_q = forward_skipping(hp_llama(hp), w, TOKENS, drop_attn, drop_mlp)
            err = float(np.abs(got - ref_q).max() / scale)
            check(f"{case}/pruned-int8: trimlm on the GGUF = numpy on its weights skipping those "
                  f"sublayers (rel {err:.1e})", err < 1e-4)
            # the .tlm runs int8 kernels (activations quantized too): close, not equal
            err = float(np.abs(got - got_tlm).max() / scale)
            check(f"{case}/pruned-int8: trimlm on the GGUF ~ trimlm on the .tlm (rel {err:.1e})",
                  err < 0.05 and (got.argmax(1) == got_tlm.argmax(1)).mean() >= 0.9)
        rc, out, err = run(["info", dst, "--json"])
        graph = [(g["kind"], g["layer"]) for g in json.loads(out)["graph"]] if rc == 0 else err
        want_graph = [(k, i) for i in range(NL) for k in ("attn", "mlp")
                      if not (k == "attn" and i in drop_attn) and not (k == "mlp" and i in drop_mlp)]
        check(f"{case}/pruned-{typ}: trimlm info shows the kept sublayers", graph == want_graph,
              f"{graph} != {want_graph}")


def hp_llama(hp):
    return hparams("llama", hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.scaling)


def leftovers(directory):
    return glob.glob(os.path.join(directory, ".*.partial-*"))


def bad_cases():
    src = os.path.join(ROOT, "llama-gqa.gguf")
    out = os.path.join(ROOT, "bad.gguf")
    rc, _, err = run(["convert", src, "-o", out, "--to", "onnx"])
    check("bad: --to unknown is a usage error naming the value",
          rc == 2 and "onnx" in err and not os.path.exists(out), f"rc {rc}: {err}")
    rc, _, err = run(["convert", src, "-o", "/nonexistent-dir/x.gguf", "--to", "gguf"])
    check("bad: unwritable output fails clearly", rc == 1 and "/nonexistent-dir/x.gguf" in err,
          f"rc {rc}: {err}")
    rc, _, err = run(["convert", src, "-o", out, "--drop-list", "attn:0", "--no-calib"])
    check("bad: layer 0's attention removed is refused for GGUF",
          rc == 1 and "layer 0" in err and "deci" in err and not os.path.exists(out),
          f"rc {rc}: {err}")
    # a .tlm file under a .gguf name would be taken for a GGUF
    t = os.path.join(ROOT, "explicit-tlm.gguf")
    rc, _, err = run(["convert", src, "-o", t, "--to", "tlm", "--no-calib"])
    check("bad: --to tlm with a .gguf name is a usage error, nothing written",
          rc == 2 and "name ends in .gguf" in err and not os.path.exists(t), f"rc {rc}: {err}")
    # a Hugging Face source: its tokenizer.json is not GGUF metadata
    import hf_fixtures as hf
    hf_dir = os.path.join(ROOT, "hf-llama")
    shutil.rmtree(hf_dir, ignore_errors=True)
    hf.write_model_dir(hf_dir, hf.llama_config())
    rc, _, err = run(["convert", hf_dir, "-o", out])
    check("bad: a source with no GGUF tokenizer is refused clearly",
          rc == 1 and "tokenizer" in err and "convert_hf_to_gguf" in err and not os.path.exists(out),
          f"rc {rc}: {err}")
    # a GGUF without tokenizer metadata
    import gguf_fixtures as gf
    hp = gf.tiny_hparams()
    tokens, tensors = gf.tiny_tensors(hp, np.random.default_rng(7))
    no_tok = os.path.join(ROOT, "no-tokenizer.gguf")
    gf.write_tiny_model(no_tok, hp, tokens, tensors,
                        drop_keys=[k for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre",
                                               "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                                               "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                                               "tokenizer.ggml.eos_token_id",
                                               "tokenizer.ggml.add_bos_token", "tokenizer.chat_template")])
    rc, _, err = run(["convert", no_tok, "-o", out])
    check("bad: a GGUF without tokenizer metadata is refused clearly",
          rc == 1 and "tokenizer" in err and not os.path.exists(out), f"rc {rc}: {err}")
    # hand-written deci files: the loader's per-layer arrays
    A = gguf.GGUFValueType.ARRAY
    hp_d = gf.tiny_hparams(arch="deci")
    no_mlp1 = {f"blk.1.{n}.weight": None for n in ("ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    for label, over, tens, want in (
            ("layer 1 without MLP loads", {"deci.feed_forward_length": ([96, 0], A)}, no_mlp1, None),
            ("array of the wrong length", {"deci.attention.head_count": ([4, 4, 4], A)}, {},
             "must be 2 32-bit integers"),
            ("attention without KV heads", {"deci.attention.head_count_kv": ([2, 0], A)}, {},
             "linear"),
            ("layers of different widths", {"deci.feed_forward_length": ([96, 64], A)}, {},
             "different MLP widths")):
        path = os.path.join(ROOT, "deci-hand.gguf")
        gf.write_tiny_model(path, hp_d, tokens, tensors, metadata_override=over, tensor_override=tens)
        rc, out_j, err = run(["info", path, "--json"])
        if want is None:
            graph = [(g["kind"], g["layer"]) for g in json.loads(out_j)["graph"]] if rc == 0 else err
            check(f"deci loader: {label}", graph == [("attn", 0), ("mlp", 0), ("attn", 1)], graph)
        else:
            check(f"deci loader: {label} is refused", rc == 1 and want in err, f"rc {rc}: {err}")
    # --keep-wide applies as for .tlm
    kw_out = os.path.join(ROOT, "keep-wide.gguf")
    rc, _, err = run(["convert", src, "-o", kw_out, "--type", "int4", "--keep-wide", "output,attn_v"])
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(kw_out).tensors} if rc == 0 else {}
    check("--keep-wide keeps the named matrices F32 (the rest Q4_0, token_embd Q8_0)",
          rc == 0 and types["output.weight"] == GT.F32 and types["blk.1.attn_v.weight"] == GT.F32
          and types["blk.1.attn_q.weight"] == GT.Q4_0 and types["token_embd.weight"] == GT.Q8_0,
          f"rc {rc}: {err} {types}")
    rc, _, err = run(["convert", src, "-o", out, "--keep-wide", "nosuch"])
    check("bad: --keep-wide naming no tensor", rc == 1 and "nosuch" in err and not os.path.exists(out),
          f"rc {rc}: {err}")
    # a file-size limit stands in for a full disk: the write fails, nothing is left
    import resource
    import signal

    def limit_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    p = subprocess.run([TRIMLM, "convert", src, "-o", out, "--type", "f32"], capture_output=True,
                       timeout=300, preexec_fn=limit_size, stdin=subprocess.DEVNULL)
    err = p.stderr.decode(errors="replace")
    check("bad: a write that runs out of room fails clearly",
          p.returncode == 1 and "cannot write" in err and not os.path.exists(out),
          f"rc {p.returncode}: {err}")
    check("bad: no temporary file left behind", not leftovers(ROOT), leftovers(ROOT))


# ------------------------------------------------------------ real model


def llama_perplexity(bin_dir, model, text, ctx, threads):
    """llama-perplexity's final estimate. Its log is written by a background
    thread, which at exit now and then loses the last lines of a run that
    succeeded: such a run is repeated (at most twice). --no-repack keeps it off
    ggml's AMX path, which crashes on hosts whose CPU reports AMX (see
    bench/compare-llamacpp)."""
    for _ in range(3):
        p = subprocess.run([os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", text,
                            "-c", str(ctx), "-b", str(ctx), "-t", threads, "--no-repack"],
                           capture_output=True, timeout=1200, stdin=subprocess.DEVNULL)
        log = (p.stdout + p.stderr).decode(errors="replace")
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", log)
        if p.returncode == 0 and m:
            return float(m.group(1)), log
        if p.returncode != 0:
            break
    return None, f"rc {p.returncode}: {log}"


def llamacpp_synthetic(bin_dir):
    """llama.cpp runs the synthetic exports (linear RoPE scaling, GQA, a
    rotate-half source permuted, q/k/v biases, tied embeddings, the deci form
    with removed attention and a zero placeholder MLP) as trimlm does: mean
    negative log-likelihood (ln of the perplexity; random weights give huge
    perplexities) within 0.1% (f32) / 1% (f16, bf16, int8, int4: llama.cpp
    rounds activations too) of trimlm's on the same file."""
    text = os.path.join(ROOT, "synthetic-text.txt")
    data = os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.test.raw")
    with open(data, "rb") as f:
        raw = f.read(6000)
    with open(text, "wb") as f:
        f.write(raw[:len(raw.decode("utf-8", "ignore").encode())])
    spec = "attn:1,3 mlp:2"
    for case, kw in CASES:
        src = os.path.join(ROOT, f"{case}.gguf")
        synth_gguf.write_gguf(src, **kw)
        for typ, extra in (("f32", []), ("f16", []), ("bf16", []), ("int4", []),
                           ("f32", ["--drop-list", spec]),
                           ("int8", ["--drop-list", spec])):
            label = f"{case}-{'pruned-' if extra else ''}{typ}"
            dst = os.path.join(ROOT, f"llamacpp-{label}.gguf")
            convert(src, dst, typ, extra + ["--to", "gguf"])
            llama_ppl, log = llama_perplexity(bin_dir, dst, text, 128, "1")
            if llama_ppl is None:
                check(f"llama.cpp/{label}: llama-perplexity loads and runs it", False, log[-2000:])
                continue
            rc, out, err = run(["eval", "-m", dst, "--ppl", text, "-c", "128", "-t", "1", "--json"])
            ours = json.loads(out)["ppl"] if rc == 0 else float("nan")
            rel = abs(math.log(ours) - math.log(llama_ppl)) / math.log(llama_ppl)
            check(f"llama.cpp/{label}: ln ppl llama.cpp {math.log(llama_ppl):.4f}, trimlm "
                  f"{math.log(ours):.4f} (rel {rel:.1e})", rel < (1e-3 if typ == "f32" else 1e-2),
                  err)


def real():
    bin_dir = testutil.llamacpp_bin()
    if not bin_dir:
        print("SKIP: llama.cpp's llama-perplexity was not found in $TLM_LLAMACPP_BIN or the cache "
              "of bench/compare-llamacpp; build it with bench/compare-llamacpp --build-only")
        return SKIP
    llamacpp_synthetic(bin_dir)
    src = testutil.real_model_path()
    data = os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.test.raw")
    text = os.path.join(ROOT, "ppl-text.txt")
    with open(data, "rb") as f:
        raw = f.read(12000)
    with open(text, "wb") as f:
        f.write(raw[:len(raw.decode("utf-8", "ignore").encode())])
    threads = str(min(2, os.cpu_count() or 1))
    for label, extra in (("unpruned", []), ("4 attention removed", ["--drop-list", "attn:20,22,24,26"])):
        dst = os.path.join(ROOT, f"smollm2-{'pruned' if extra else 'full'}-int8.gguf")
        convert(src, dst, "int8", extra + ["--to", "gguf"])
        llama_ppl, log = llama_perplexity(bin_dir, dst, text, 512, threads)
        if llama_ppl is None:
            check(f"real/{label}: llama-perplexity loads and runs it", False, log[-2000:])
            continue
        rc, out, err = run(["eval", "-m", dst, "--ppl", text, "-c", "512", "-t", threads, "--json"],
                           timeout=1200)
        if rc != 0:
            check(f"real/{label}: trimlm eval --ppl", False, err)
            continue
        ours = json.loads(out)["ppl"]
        rel = abs(ours - llama_ppl) / llama_ppl
        check(f"real/{label}: llama.cpp ppl {llama_ppl:.4f}, trimlm {ours:.4f} (rel {rel:.2%})",
              rel < 0.01)
    return 0


def main():
    os.makedirs(ROOT, exist_ok=True)
    mode = sys.argv[1]
    if mode == "synthetic":
        synthetic(sys.argv[2])
        rc = 0
    else:
        rc = real()
        if rc == SKIP:
            return SKIP
    return summary()


if __name__ == "__main__":
    sys.exit(main())
