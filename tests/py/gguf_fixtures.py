"""Helpers for the GGUF tests: random but valid quantized blocks and tiny
llama / qwen2 GGUF files written with the independent `gguf` package.
The paths (the real model's too) and fail() are in testutil.py."""

import subprocess

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT


def run(cmd):
    """cmd's CompletedProcess, with its output as text."""
    return subprocess.run(cmd, capture_output=True, text=True)


# ------------------------------------------------------ random valid blocks

# Byte offsets of the f16 scale fields in each block, so that they can be
# given finite values (random bytes there would make NaN/inf).
F16_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}


def random_finite_f16(rng, n):
    """Random f16 bit patterns with every finite value possible (zeros and
    subnormals included), never inf/NaN."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    exp = (bits >> 10) & 0x1F
    bits[exp == 31] &= np.uint16(0xBFFF)  # clear the exponent's top bit: finite
    return bits


def random_blocks(rng, qtype, n_blocks):
    """n_blocks random blocks of qtype as a uint8 array (n_blocks, type_size)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == QT.F32:
        v = rng.standard_normal(n_blocks).astype(np.float32) * np.float32(100)
        return v.view(np.uint8).reshape(n_blocks, 4)
    if qtype == QT.F16:
        return random_finite_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    if qtype == QT.BF16:
        bits = rng.integers(0, 1 << 16, size=n_blocks, dtype=np.uint32).astype(np.uint16)
        exp = (bits >> 7) & 0xFF
        bits[exp == 255] &= np.uint16(0xBFFF)
        return bits.view(np.uint8).reshape(n_blocks, 2)
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint16).astype(np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off:off + 2] = random_finite_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw


# -------------------------------------------------------- tiny GGUF models


def byte_level_vocab():
    """GPT-2 byte-to-printable mapping: the 256 single-byte tokens."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_hparams(**over):
    hp = dict(arch="llama", n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=96,
              n_ctx=256, rms_eps=1e-5, rope_theta=10000.0, tied=True)
    hp.update(over)
    return hp


def tiny_tensors(hp, rng, qtype=QT.F32):
    """name -> float32 array in numpy (out, in) order for a tiny model."""
    tokens = byte_level_vocab() + ["\u0120t", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    n_vocab = len(tokens)
    e, f = hp["n_embd"], hp["n_ff"]
    hd = e // hp["n_head"]
    qd, kvd = hp["n_head"] * hd, hp["n_head_kv"] * hd
    t = {"token_embd.weight": rng.standard_normal((n_vocab, e)),
         "output_norm.weight": 1 + 0.1 * rng.standard_normal(e)}
    if not hp["tied"]:
        t["output.weight"] = rng.standard_normal((n_vocab, e))
    for i in range(hp["n_layer"]):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = 1 + 0.1 * rng.standard_normal(e)
        t[p + "attn_q.weight"] = rng.standard_normal((qd, e))
        t[p + "attn_k.weight"] = rng.standard_normal((kvd, e))
        t[p + "attn_v.weight"] = rng.standard_normal((kvd, e))
        t[p + "attn_output.weight"] = rng.standard_normal((e, qd))
        if hp["arch"] == "qwen2":
            t[p + "attn_q.bias"] = rng.standard_normal(qd)
            t[p + "attn_k.bias"] = rng.standard_normal(kvd)
            t[p + "attn_v.bias"] = rng.standard_normal(kvd)
        t[p + "ffn_norm.weight"] = 1 + 0.1 * rng.standard_normal(e)
        t[p + "ffn_gate.weight"] = rng.standard_normal((f, e))
        t[p + "ffn_up.weight"] = rng.standard_normal((f, e))
        t[p + "ffn_down.weight"] = rng.standard_normal((e, f))
    return tokens, {k: (0.05 * v).astype(np.float32) for k, v in t.items()}


def write_tiny_model(path, hp, tokens, tensors, qtypes=None, metadata_override=None,
                     drop_keys=(), tensor_override=None):
    """Writes a tiny GGUF model. qtypes: name -> GGML type for matrices (default
    F32; types gguf cannot quantize get random blocks). metadata_override: key -> (value, GGUFValueType) replacing or adding
    keys. tensor_override: name -> array (or None to drop) applied last."""
    arch = hp["arch"]
    w = gguf.GGUFWriter(path, arch)  # writes general.architecture
    kv = {
        f"{arch}.block_count": (hp["n_layer"], gguf.GGUFValueType.UINT32),
        f"{arch}.context_length": (hp["n_ctx"], gguf.GGUFValueType.UINT32),
        f"{arch}.embedding_length": (hp["n_embd"], gguf.GGUFValueType.UINT32),
        f"{arch}.feed_forward_length": (hp["n_ff"], gguf.GGUFValueType.UINT32),
        f"{arch}.attention.head_count": (hp["n_head"], gguf.GGUFValueType.UINT32),
        f"{arch}.attention.head_count_kv": (hp["n_head_kv"], gguf.GGUFValueType.UINT32),
        f"{arch}.attention.layer_norm_rms_epsilon": (hp["rms_eps"], gguf.GGUFValueType.FLOAT32),
        f"{arch}.rope.freq_base": (hp["rope_theta"], gguf.GGUFValueType.FLOAT32),
        "general.name": ("tiny-" + arch, gguf.GGUFValueType.STRING),
        "tokenizer.ggml.model": ("gpt2", gguf.GGUFValueType.STRING),
        "tokenizer.ggml.pre": ("smollm", gguf.GGUFValueType.STRING),
        "tokenizer.ggml.tokens": (tokens, gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.token_type": ([1] * (len(tokens) - 3) + [3, 3, 3], gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.merges": (["\u0120 t"], gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.bos_token_id": (len(tokens) - 3, gguf.GGUFValueType.UINT32),
        "tokenizer.ggml.eos_token_id": (len(tokens) - 1, gguf.GGUFValueType.UINT32),
        "tokenizer.ggml.add_bos_token": (False, gguf.GGUFValueType.BOOL),
        "tokenizer.chat_template": ("{% for m in messages %}{{ m['content'] }}{% endfor %}",
                                    gguf.GGUFValueType.STRING),
    }
    kv.update(metadata_override or {})
    for key in drop_keys:
        kv.pop(key, None)
    for key, (value, vtype) in kv.items():
        if key == "general.architecture":
            continue
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(key, value)
        else:
            w.add_key_value(key, value, vtype)
    tensors = dict(tensors)
    for name, arr in (tensor_override or {}).items():
        if arr is None:
            tensors.pop(name, None)
        else:
            tensors[name] = arr
    qtypes = qtypes or {}
    for name, arr in tensors.items():
        qt = qtypes.get(name, QT.F32)
        if arr.dtype.kind == "i":  # integer tensors (I8/I16/I32) as they are
            w.add_tensor(name, arr)
        elif qt == QT.F32:
            w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
        elif qt == QT.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            try:
                q = gguf.quants.quantize(arr.astype(np.float32), qt)
            except NotImplementedError:
                # no quantizer for this type in gguf (the K-quants): random
                # valid blocks of the right byte shape stand in for the values
                block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
                rows, cols = (1, arr.shape[0]) if arr.ndim == 1 else arr.shape
                rng = np.random.default_rng(len(name))
                q = random_blocks(rng, qt, rows * cols // block_size).reshape(rows, -1)
                if arr.ndim == 1:
                    q = q.reshape(-1)
            w.add_tensor(name, q, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
