"""Tiny synthetic Hugging Face model directories for tests.

A directory written here looks like a real checkpoint:

    config.json                 llama / mistral / qwen2 style
    tokenizer.json              byte-level BPE (built with the `tokenizers` package)
    tokenizer_config.json       special tokens + a ChatML chat template
    model.safetensors           or model-0000i-of-0000N.safetensors + model.safetensors.index.json

Weights are random (seeded) and stored as f32, f16 or bf16. The writer returns
the weights as float32 numpy arrays in Hugging Face naming, holding exactly the
values in the file (after rounding to the stored dtype), so that a numpy
forward pass over them is the reference for the runtime's logits.

Usage:
    import hf_fixtures as hf
    cfg = hf.llama_config(tie_word_embeddings=True)
    weights = hf.write_model_dir(out_dir, cfg, seed=1, dtype="bf16", shards=2)
"""

import json
import os
import re

import numpy as np

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}

# ------------------------------------------------------------------ configs


def _base_config(model_type, **overrides):
    cfg = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": 320,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    cfg.update(overrides)
    return cfg


def llama_config(**overrides):
    """A small LlamaForCausalLM config; keyword arguments override fields."""
    return _base_config("llama", **overrides)


def mistral_config(**overrides):
    """A small MistralForCausalLM config (sliding_window larger than the context)."""
    return _base_config("mistral", **{"sliding_window": 4096, "rope_theta": 1000000.0, **overrides})


def qwen2_config(**overrides):
    """A small Qwen2ForCausalLM config (q/k/v projections carry biases)."""
    return _base_config(
        "qwen2",
        **{"rope_theta": 1000000.0, "use_sliding_window": False, "sliding_window": 4096,
           "tie_word_embeddings": True, **overrides},
    )


def config_dims(cfg):
    """(n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff) with HF defaults."""
    n_head = cfg["num_attention_heads"]
    n_head_kv = cfg.get("num_key_value_heads") or n_head
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    return (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], n_head, n_head_kv,
            head_dim, cfg["intermediate_size"])


def has_qkv_bias(cfg):
    archs = cfg.get("architectures") or []
    if archs:
        return archs[0] == "Qwen2ForCausalLM"
    return cfg.get("model_type") == "qwen2"


# ------------------------------------------------------------------ weights


def round_to_dtype(a, dtype):
    """The float32 values an array takes after storage as dtype ('f32', 'f16', 'bf16')."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "f32":
        return a.copy()
    if dtype == "f16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(a))
    raise ValueError(f"unknown dtype {dtype!r}")


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def make_weights(cfg, seed=0):
    """Random float32 weights in HF naming and HF shapes (out_features, in_features)."""
    rng = np.random.default_rng(seed)
    n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff = config_dims(cfg)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def vec(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((n_vocab, n_embd)).astype(np.float32)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(n_embd)
        w[p + "self_attn.q_proj.weight"] = mat(n_head * head_dim, n_embd)
        w[p + "self_attn.k_proj.weight"] = mat(n_head_kv * head_dim, n_embd)
        w[p + "self_attn.v_proj.weight"] = mat(n_head_kv * head_dim, n_embd)
        if has_qkv_bias(cfg):
            w[p + "self_attn.q_proj.bias"] = vec(n_head * head_dim)
            w[p + "self_attn.k_proj.bias"] = vec(n_head_kv * head_dim)
            w[p + "self_attn.v_proj.bias"] = vec(n_head_kv * head_dim)
        w[p + "self_attn.o_proj.weight"] = mat(n_embd, n_head * head_dim)
        w[p + "post_attention_layernorm.weight"] = norm(n_embd)
        w[p + "mlp.gate_proj.weight"] = mat(n_ff, n_embd)
        w[p + "mlp.up_proj.weight"] = mat(n_ff, n_embd)
        w[p + "mlp.down_proj.weight"] = mat(n_embd, n_ff)
    w["model.norm.weight"] = norm(n_embd)
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = mat(n_vocab, n_embd)
    return w


# ------------------------------------------------------------------ safetensors


_ST_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def encode_tensor(a, dtype):
    """(safetensors dtype name, raw little-endian bytes) of a float array stored as dtype."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "f32":
        raw = a.astype("<f4").tobytes()
    elif dtype == "f16":
        raw = a.astype("<f2").tobytes()
    elif dtype == "bf16":
        raw = f32_to_bf16_bits(a).astype("<u2").tobytes()
    else:
        raise ValueError(f"unknown dtype {dtype!r}")
    return _ST_DTYPES[dtype], raw


def safetensors_bytes(tensors, dtype="f32", metadata=None):
    """A safetensors file image for {name: float array}; dtype is one name or {name: dtype}."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    chunks, offset = [], 0
    for name, a in tensors.items():
        dt = dtype[name] if isinstance(dtype, dict) else dtype
        st_name, raw = encode_tensor(a, dt)
        header[name] = {"dtype": st_name, "shape": list(np.shape(a)),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data section starts 8-aligned, as the reference writer does
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def write_safetensors(path, tensors, dtype="f32", metadata=None):
    with open(path, "wb") as f:
        f.write(safetensors_bytes(tensors, dtype, metadata))


def shard_file_name(i, n):
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def write_weights(dir_path, weights, dtype="f32", shards=1):
    """model.safetensors, or `shards` files + model.safetensors.index.json."""
    names = list(weights)
    if shards <= 1:
        write_safetensors(os.path.join(dir_path, "model.safetensors"), weights, dtype,
                          metadata={"format": "pt"})
        return
    groups = np.array_split(np.arange(len(names)), shards)
    weight_map, total = {}, 0
    for i, idx in enumerate(groups):
        fname = shard_file_name(i, shards)
        part = {names[j]: weights[names[j]] for j in idx}
        write_safetensors(os.path.join(dir_path, fname), part, dtype, metadata={"format": "pt"})
        for name, a in part.items():
            weight_map[name] = fname
            total += len(encode_tensor(a, dtype)[1])
    with open(os.path.join(dir_path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# ------------------------------------------------------------------ tokenizer

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Hello world! Hello there, how are you? "
    "I am fine, thank you. What is the capital of France? The capital of France is Paris. "
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024. def main(): return 0 "
    "Once upon a time there was a little model that could answer questions about the world. "
)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable code point map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _learn_merges(n_merges):
    """Deterministic BPE merges: most frequent adjacent pair over the corpus words
    (ties broken by the pair's text), then filler merges when the corpus runs dry."""
    b2u = bytes_to_unicode()
    words = {}
    for piece in re.findall(r" ?\w+| ?[^\s\w]+|\s+", _CORPUS):
        if piece:
            sym = tuple(b2u[b] for b in piece.encode())
            words[sym] = words.get(sym, 0) + 1
    merges, vocab_new = [], set()
    while len(merges) < n_merges:
        counts = {}
        for sym, c in words.items():
            for a, b in zip(sym, sym[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + c
        # a pair whose text is already a token would not add a vocabulary entry
        candidates = [(-c, pair) for pair, c in counts.items() if pair[0] + pair[1] not in vocab_new]
        if not candidates:
            break
        best = min(candidates)[1]
        merges.append(best)
        vocab_new.add(best[0] + best[1])
        new_words = {}
        for sym, c in words.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    # Filler: pairs of lowercase letters not merged yet.
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in letters:
        for b in letters:
            if len(merges) >= n_merges:
                return merges
            if a + b not in vocab_new:
                merges.append((a, b))
                vocab_new.add(a + b)
    if len(merges) < n_merges:
        raise ValueError(f"cannot make {n_merges} merges for the test tokenizer")
    return merges


def make_bytelevel_tokenizer(vocab_size, special_tokens=SPECIAL_TOKENS):
    """A byte-level BPE `tokenizers.Tokenizer` with exactly vocab_size tokens:
    the 256 byte symbols, learned merges, then the special tokens (last ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} < 256 bytes + {len(special_tokens)} specials")
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u, key=lambda b: ord(b2u[b])))}
    merges = _learn_merges(n_merges)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(list(special_tokens))
    if tok.get_vocab_size() != vocab_size:
        raise AssertionError(f"test tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    return tok


def tokenizer_config(special_tokens=SPECIAL_TOKENS, chat_template=CHATML_TEMPLATE, vocab_size=None):
    """tokenizer_config.json contents matching make_bytelevel_tokenizer (SmolLM2-like)."""
    cfg = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": special_tokens[1] if len(special_tokens) > 1 else None,
        "eos_token": special_tokens[2] if len(special_tokens) > 2 else None,
        "unk_token": special_tokens[0] if special_tokens else None,
        "pad_token": special_tokens[2] if len(special_tokens) > 2 else None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "tokenizer_class": "GPT2Tokenizer",
    }
    if vocab_size is not None:
        base = vocab_size - len(special_tokens)
        cfg["added_tokens_decoder"] = {
            str(base + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True}
            for i, t in enumerate(special_tokens)
        }
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    return cfg


# ------------------------------------------------------------------ whole directory


def write_tokenizer_files(dir_path, vocab_size, with_config=True):
    tok = make_bytelevel_tokenizer(vocab_size)
    tok.save(os.path.join(dir_path, "tokenizer.json"))
    if with_config:
        with open(os.path.join(dir_path, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config(vocab_size=vocab_size), f, indent=2)
    return tok


def write_model_dir(dir_path, cfg, seed=0, dtype="f32", shards=1, tokenizer="bytelevel",
                    tokenizer_config=True, weights=None):
    """Writes a complete HF model directory and returns its weights
    ({HF name: float32 array}, values exactly as stored).

    cfg: a dict from llama_config()/mistral_config()/qwen2_config().
    dtype: 'f32' | 'f16' | 'bf16'. shards: 1 = model.safetensors, N = N shards + index.
    tokenizer: 'bytelevel' or None (no tokenizer files).
    weights: optional dict to write instead of random ones (for shape-error tests).
    """
    os.makedirs(dir_path, exist_ok=True)
    with open(os.path.join(dir_path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if tokenizer == "bytelevel":
        write_tokenizer_files(dir_path, cfg["vocab_size"], with_config=tokenizer_config)
    elif tokenizer is not None:
        raise ValueError(f"unknown tokenizer kind {tokenizer!r}")
    if weights is None:
        weights = make_weights(cfg, seed)
    write_weights(dir_path, weights, dtype, shards)
    return {k: round_to_dtype(v, dtype) for k, v in weights.items()}


write_llama_dir = write_model_dir
