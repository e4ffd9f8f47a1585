"""int8 / int4 models end to end: `trimlm convert --type int8|int4`, the .tlm
reader mapping the packed tensors, and the forward pass on them.

    test_quant_model.py synthetic TOOL_LOGITS   tiny GGUF models written here
    test_quant_model.py real TOOL_LOGITS        the default model (SmolLM2)

Synthetic: the converted model's logits are compared with an independent
numpy forward pass whose weights are quantized here by the formats' rules
(quant/qformat.h: round-to-nearest Q8_0 / Q4_0, f16 scales, one per 32
inputs) and dequantized:
  - prefill (one call of n tokens) either multiplies f32 activations by
    the dequantized weights (dequantize + sgemm: compared with the reference
    on the same weights) or, on kernel tables whose int8 GEMM is preferred
    (AVX-512 VNNI), rounds the input rows of int8 (q8_g32) matrices to int8
    as decode does (compared with a reference that does the same); it must
    match one of the two;
  - decode (one token per call) also quantizes the input of each quantized
    matrix to int8 per group of 32 (d = max|x| / 127, round half to even):
    compared with a reference that rounds its activations the same way.
Both tolerances are small next to what quantization itself changes (also
checked, loosely, against the f32 model), and 1 and 2 threads give the same
decode logits bit for bit. Real: perplexity on the first 100 kB of
WikiText-2 (8 chunks of 512) and a greedy answer.
"""
import json
import os
import sys

import numpy as np

import ref_llama
import synth_gguf
from testutil import check, round_half_away, summary, tool_logits
import testutil

TRIMLM = os.environ["TRIMLM"]
ROOT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "quant_model")
F32 = np.float32
GROUP = 32

# Against the numpy reference on the same quantized weights (|logit| ~ 1-10):
# prefill differs by f32 vs f64 arithmetic only; decode also by the rare
# activation that rounds to the other int8 neighbour after upstream f32
# differences (one step of d_x = max|x|/127 on one product).
PREFILL_TOL = 2e-3
DECODE_TOL = 2e-2
# Against the f32 model, as a fraction of max |logit|: what RTN quantization
# costs on random weights (measured ~1.7% for int8, ~14% for int4).
VS_F32_REL = {"int8": 0.05, "int4": 0.30}


def run(args, timeout=900):
    return testutil.run([TRIMLM] + args, timeout)


# ------------------------------------------------------- numpy formats


def f16(v):
    return v.astype(np.float16).astype(np.float64)


def q8_dequantized(w):
    """Q8_0 round trip of a (rows, cols) matrix: d = max|w| / 127 (f32),
    q = roundf(w * (1/d)), value = f16(d) * q."""
    b = w.astype(F32).reshape(-1, GROUP)
    d = (np.abs(b).max(axis=1, keepdims=True) / F32(127)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d).astype(F32)
    q = round_half_away((b * inv).astype(F32))
    return (f16(d) * q).reshape(w.shape)


def q4_dequantized(w):
    """Q4_0 round trip: m = the element of largest magnitude (the first one),
    d = m / -8 (f32), q = min(15, trunc(w * (1/d) + 8.5)), value = f16(d) (q - 8)."""
    b = w.astype(F32).reshape(-1, GROUP)
    idx = np.abs(b).argmax(axis=1)[:, None]
    m = np.take_along_axis(b, idx, axis=1)
    d = (m / F32(-8)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d).astype(F32)
    q = np.clip(np.trunc(((b * inv).astype(F32) + F32(8.5)).astype(F32)), 0, 15)
    return (f16(d) * (q - 8)).reshape(w.shape)


def act_dequantized(x):
    """Activation rows quantized per group of 32 as the decode path does:
    d = max|x| / 127 (f32), q = round-half-even(x * (1/d)), value = d q."""
    b = x.astype(F32).reshape(-1, GROUP)
    d = (np.abs(b).max(axis=1, keepdims=True) / F32(127)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d).astype(F32)
    q = np.rint((b * inv).astype(F32))
    return (d.astype(np.float64) * q).reshape(x.shape)


DEQUANT = {"q8_g32": q8_dequantized, "q4_g32": q4_dequantized}


def packed_bytes(qtype, rows, cols):
    """qformat.h: 16-row tiles of n_groups x (QB + 32) bytes, padded to 64."""
    qb = 512 if qtype == "q8_g32" else 256
    tile = ((cols // GROUP) * (qb + 32) + 63) // 64 * 64
    return (rows + 15) // 16 * tile


# ------------------------------------------------------ numpy forward


def forward(model, qtypes, tokens, act_quant):
    """Logits (n, n_vocab) of tokens at positions 0..n-1, all at once (the
    decode path's per-token activation rounding is per row, so it is the
    same in a batch). qtypes: GGUF tensor name -> stored type. act_quant:
    True (every quantized matrix's input rounded to int8), False (none), or
    the stored types whose inputs are rounded."""
    hp = model.hp
    n = len(tokens)
    pos = np.arange(n)
    inv_freq = ref_llama.rope_inv_freq(hp)
    group = hp.n_head // hp.n_head_kv

    def mm(h, w, name):
        t = qtypes.get(name, "f32")
        if t in DEQUANT and (act_quant is True or (act_quant and t in act_quant)):
            h = act_dequantized(h)
        return h @ w.T

    embd_name = "token_embd.weight"
    x = model.tok_embd[np.asarray(tokens)].copy()
    for li, L in enumerate(model.layers):
        p = f"blk.{li}."
        h = ref_llama.rms_norm(x, L["attn_norm"], hp.eps)
        q, k, v = mm(h, L["wq"], p + "attn_q.weight"), mm(h, L["wk"], p + "attn_k.weight"), \
            mm(h, L["wv"], p + "attn_v.weight")
        if L["bq"] is not None:
            q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
        q = ref_llama.apply_rope(q.reshape(n, hp.n_head, hp.head_dim), pos, inv_freq, hp)
        k = ref_llama.apply_rope(k.reshape(n, hp.n_head_kv, hp.head_dim), pos, inv_freq, hp)
        v = v.reshape(n, hp.n_head_kv, hp.head_dim)
        K, V = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = np.einsum("nhd,thd->hnt", q, K) / np.sqrt(hp.head_dim)
        s = np.where((pos[None, :] > pos[:, None])[None], -np.inf, s)
        att = np.einsum("hnt,thd->nhd", ref_llama.softmax(s), V).reshape(n, -1)
        x = x + mm(att, L["wo"], p + "attn_output.weight")
        h = ref_llama.rms_norm(x, L["ffn_norm"], hp.eps)
        g = ref_llama.silu(mm(h, L["w_gate"], p + "ffn_gate.weight")) * \
            mm(h, L["w_up"], p + "ffn_up.weight")
        x = x + mm(g, L["w_down"], p + "ffn_down.weight")
    out_name = "output.weight" if "output.weight" in qtypes else embd_name
    return mm(ref_llama.rms_norm(x, model.out_norm, hp.eps), model.output, out_name)


def quantized_model(gguf_path, qtypes):
    """The GGUF's weights (float64) with every tensor stored quantized in the
    .tlm replaced by its quantize-dequantize round trip."""
    m = ref_llama.load(gguf_path)

    def rt(name, w):
        t = qtypes[name]
        return DEQUANT[t](w) if t in DEQUANT else w

    keys = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
            "w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"}
    for li, L in enumerate(m.layers):
        for k, role in keys.items():
            L[k] = rt(f"blk.{li}.{role}.weight", L[k])
    tied = m.output is m.tok_embd
    m.tok_embd = rt("token_embd.weight", m.tok_embd)
    m.output = m.tok_embd if tied else rt("output.weight", m.output)
    return m


def info_json(path):
    return testutil.info_json(TRIMLM, path)


# --------------------------------------------------------------- synthetic


CASES = [
    # name, write_gguf arguments
    ("llama", dict(arch="llama")),
    ("qwen2-tied", dict(arch="qwen2", tied=True, n_embd=96, n_head=6, n_head_kv=2, n_ff=128,
                        seed=3)),
    # n_ff = 80 is not a multiple of 32: ffn_down (80 inputs) stays f32
    ("llama-ff80", dict(arch="llama", n_ff=80, seed=5)),
]


def synthetic(tool):
    tokens = [5, 300, 17, 42, 260, 99, 1, 7, 128, 64, 33, 250]
    for case, kw in CASES:
        gguf_path = os.path.join(ROOT, f"{case}.gguf")
        synth_gguf.write_gguf(gguf_path, **kw)
        n_vocab = kw.get("n_vocab", 320)
        f32_logits = tool_logits(tool, gguf_path, tokens,
                                 os.path.join(ROOT, f"{case}-f32.bin")).reshape(len(tokens), n_vocab)
        for kind in ("int8", "int4"):
            tlm = os.path.join(ROOT, f"{case}-{kind}.tlm")
            # --no-calib: round-to-nearest, the rule the numpy reference follows
            # (calibrated quantization: tests/test_drop.py, tests/test_awq.c)
            rc, _, err = run(["convert", gguf_path, "-o", tlm, "--type", kind, "--no-calib"])
            check(f"{case} {kind}: convert", rc == 0, err)
            if rc != 0:
                continue
            info = info_json(tlm)
            qtypes = {t["name"]: t["type"] for t in info["tensors"]}
            main_q = "q8_g32" if kind == "int8" else "q4_g32"
            want_ok = all(
                (t == "f32") if (name.endswith(".bias") or "norm" in name or
                                 (case == "llama-ff80" and "ffn_down" in name))
                else (t == ("q8_g32" if name in ("token_embd.weight", "output.weight") else main_q))
                for name, t in qtypes.items())
            check(f"{case} {kind}: tensor types", want_ok, qtypes)
            sizes_ok = all(t["bytes"] == packed_bytes(t["type"], *t["shape"])
                           for t in info["tensors"] if t["type"] in DEQUANT)
            check(f"{case} {kind}: packed tensor sizes", sizes_ok)
            if case == "llama":  # every matrix quantized, 64 inputs: no tile padding
                bpw = info["bits_per_weight"]
                check(f"{case} {kind}: bits/weight {bpw:.2f}",
                      (8.4 < bpw < 8.7) if kind == "int8" else (4.4 < bpw < 6.5), bpw)
            rc, _, err = run(["info", tlm, "--verify"])
            check(f"{case} {kind}: info --verify", rc == 0, err)

            model = quantized_model(gguf_path, qtypes)
            ref_pf = forward(model, qtypes, tokens, act_quant=False)
            ref_dec = forward(model, qtypes, tokens, act_quant=True)
            out = {}
            for mode in ("prefill", "decode"):
                for t in (1, 2):
                    out[mode, t] = tool_logits(tool, tlm, tokens,
                                               os.path.join(ROOT, f"{case}-{kind}-{mode}-{t}.bin"),
                                               mode, t).reshape(len(tokens), n_vocab)
            for t in (1, 2):
                # prefill is dequantize + sgemm (f32 activations), or, where the
                # kernel table prefers it (AVX-512 VNNI), the int8 GEMM, which
                # rounds the input rows of every quantized matrix as decode does
                d = np.abs(out["prefill", t] - ref_pf).max()
                dq = np.abs(out["prefill", t] - ref_dec).max()
                check(f"{case} {kind}: prefill t{t} vs numpy: f32 activations {d:.2e}, "
                      f"int8 activations into int8 weights {dq:.2e}",
                      d < PREFILL_TOL or dq < DECODE_TOL, (d, dq))
                d = np.abs(out["decode", t] - ref_dec).max()
                check(f"{case} {kind}: decode t{t} vs numpy (int8 activations) {d:.2e}",
                      d < DECODE_TOL, d)
            check(f"{case} {kind}: decode 1 and 2 threads bit-identical",
                  np.array_equal(out["decode", 1], out["decode", 2]))
            scale = np.abs(f32_logits).max()
            for mode in ("prefill", "decode"):
                rel = np.abs(out[mode, 1] - f32_logits).max() / scale
                check(f"{case} {kind}: {mode} vs f32 model {rel:.3f} of max|logit|",
                      rel < VS_F32_REL[kind], rel)
            # mixed prefill/decode steps (each with its own activation
            # rounding, sharing one KV cache) stay as close to f32
            mixed = tool_logits(tool, tlm, tokens, os.path.join(ROOT, f"{case}-{kind}-mixed.bin"),
                                "mixed", 2).reshape(len(tokens), n_vocab)
            kept = ~np.isnan(mixed[:, 0])
            rel = np.abs(mixed[kept] - f32_logits[kept]).max() / scale
            check(f"{case} {kind}: mixed steps vs f32 model {rel:.3f}", rel < VS_F32_REL[kind], rel)

    # a quantized .tlm converts again to its own type (bytes copied) but not
    # to another one; a damaged quantized tensor is named by --verify
    src = os.path.join(ROOT, "llama-int8.tlm")
    again = os.path.join(ROOT, "llama-int8-again.tlm")
    rc, _, err = run(["convert", src, "-o", again, "--type", "int8"])
    check("int8 .tlm -> int8 again", rc == 0, err)
    if rc == 0:
        a = tool_logits(tool, src, tokens, os.path.join(ROOT, "again-a.bin"), "decode")
        b = tool_logits(tool, again, tokens, os.path.join(ROOT, "again-b.bin"), "decode")
        check("int8 .tlm -> int8 again: same logits", np.array_equal(a, b))
    rc, _, err = run(["convert", src, "-o", os.path.join(ROOT, "x.tlm"), "--type", "int4"])
    check("int8 .tlm -> int4 refused", rc != 0 and "convert from the original" in err, err)
    info = info_json(src)
    victim = next(t for t in info["tensors"] if t["name"] == "blk.1.ffn_up.weight")
    damaged = os.path.join(ROOT, "damaged-int8.tlm")
    data = bytearray(open(src, "rb").read())
    data[victim["offset"] + victim["bytes"] // 2] ^= 0x10
    open(damaged, "wb").write(bytes(data))
    rc, _, err = run(["info", damaged, "--verify"])
    check("damaged q8 tensor named by --verify", rc != 0 and "blk.1.ffn_up.weight" in err, err)
    rc, out, err = run(["convert", "--help"])
    check("convert --help documents int4's int8 output matrix",
          "int4" in out and "int8" in out and "token_embd" in out, out)


# -------------------------------------------------------------------- real

# int8 must stay within 0.5% of f32. int4 (round-to-nearest, no calibration)
# costs ~20% on this 135M model whose source weights are themselves 4-bit
# (Q4_1); the bound leaves room for run-to-run noise only.
INT8_PPL_REL = 0.005
INT4_PPL_REL = 0.25


def real(tool):
    model = os.path.expanduser("~/.cache/trimlm/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    data = os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.test.raw")
    text = os.path.join(ROOT, "wiki100k.txt")
    with open(data, "rb") as f, open(text, "wb") as g:
        g.write(f.read(100000))
    ppl = {}
    paths = {"f32": model}
    for kind in ("int8", "int4"):
        paths[kind] = os.path.join(ROOT, f"smol-{kind}.tlm")
        rc, _, err = run(["convert", model, "-o", paths[kind], "--type", kind])
        check(f"SmolLM2 convert {kind}", rc == 0, err)
        if rc != 0:
            return
    for kind, path in paths.items():
        rc, out, err = run(["eval", "-m", path, "--ppl", text, "--ctx", "512", "--chunks", "8",
                            "-t", "2", "--json"])
        check(f"SmolLM2 {kind}: eval --ppl", rc == 0, err)
        if rc != 0:
            return
        ppl[kind] = json.loads(out)["ppl"]
        print(f"     {kind}: ppl {ppl[kind]:.4f}")
    r8 = ppl["int8"] / ppl["f32"] - 1
    r4 = ppl["int4"] / ppl["f32"] - 1
    check(f"SmolLM2 int8 ppl within {INT8_PPL_REL:.1%} of f32 ({r8:+.3%})", abs(r8) < INT8_PPL_REL)
    check(f"SmolLM2 int4 ppl within {INT4_PPL_REL:.0%} of f32 ({r4:+.2%})", r4 < INT4_PPL_REL)
    for kind in ("int8", "int4"):
        rc, out, err = run(["run", "-m", paths[kind], "-p", "What is the capital of France?",
                            "--temp", "0", "-n", "24", "-t", "2"])
        check(f"SmolLM2 {kind}: greedy answer mentions Paris", rc == 0 and "Paris" in out,
              out + err)


def main():
    mode, tool = sys.argv[1], sys.argv[2]
    os.makedirs(ROOT, exist_ok=True)
    synthetic(tool) if mode == "synthetic" else real(tool)
    sys.exit(summary())


if __name__ == "__main__":
    main()
