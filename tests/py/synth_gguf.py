"""Tiny synthetic GGUF models (llama, qwen2) written with gguf.GGUFWriter.

Weights are random (seeded) and stored as F32 (or F16 / Q8_0 per tensor when
asked), with the metadata keys llama.cpp uses, and a byte-level BPE ("gpt2")
vocabulary: the 256 byte symbols, merges of lowercase letter pairs, and
ChatML special tokens.

    import synth_gguf
    synth_gguf.write_gguf(path, arch="llama", tied=False, rope_scaling=("linear", 2.0))

From Hugging Face weights (for the same model through two formats):
    synth_gguf.write_gguf_from_hf(path, hf_weights, hf_config)
which permutes Q/K rows the way llama.cpp's converter does for llama, so that
the GGUF's adjacent-pair RoPE equals the checkpoint's rotate-half RoPE.
"""

import numpy as np

import gguf

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable code points."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def make_vocab(n_vocab):
    """(tokens, token_types, merges) with exactly n_vocab tokens."""
    byte_syms = bytes_to_unicode()
    tokens = [byte_syms[b] for b in range(256)]
    n_merges = n_vocab - 256 - len(SPECIALS)
    if n_merges < 0:
        raise ValueError("n_vocab must be at least 259")
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    merges = []
    for a in letters:
        for b in letters:
            if len(merges) == n_merges:
                break
            merges.append(f"{a} {b}")
            tokens.append(a + b)
    if len(merges) < n_merges:
        raise ValueError("n_vocab too large for the synthetic merge list")
    tokens += SPECIALS
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
    return tokens, types, merges


def random_weights(n_vocab=320, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=96,
                   head_dim=None, qkv_bias=False, tied=False, seed=0):
    """GGUF-named float32 weights, each (out, in) as numpy (rows, cols)."""
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_head

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": rng.standard_normal((n_vocab, n_embd)).astype(np.float32)}
    for i in range(n_layer):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(n_embd)
        w[p + "attn_q.weight"] = mat(n_head * hd, n_embd)
        w[p + "attn_k.weight"] = mat(n_head_kv * hd, n_embd)
        w[p + "attn_v.weight"] = mat(n_head_kv * hd, n_embd)
        if qkv_bias:
            w[p + "attn_q.bias"] = (0.1 * rng.standard_normal(n_head * hd)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.1 * rng.standard_normal(n_head_kv * hd)).astype(np.float32)
            w[p + "attn_v.bias"] = (0.1 * rng.standard_normal(n_head_kv * hd)).astype(np.float32)
        w[p + "attn_output.weight"] = mat(n_embd, n_head * hd)
        w[p + "ffn_norm.weight"] = norm(n_embd)
        w[p + "ffn_gate.weight"] = mat(n_ff, n_embd)
        w[p + "ffn_up.weight"] = mat(n_ff, n_embd)
        w[p + "ffn_down.weight"] = mat(n_embd, n_ff)
    w["output_norm.weight"] = norm(n_embd)
    if not tied:
        w["output.weight"] = mat(n_vocab, n_embd)
    return w


def _store(writer, name, a, qtype):
    if qtype is None or a.ndim == 1:
        writer.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
    elif qtype == "f16":
        writer.add_tensor(name, a.astype(np.float16))
    else:
        q = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_1": gguf.GGMLQuantizationType.Q4_1}[qtype]
        writer.add_tensor(name, gguf.quants.quantize(a, q), raw_dtype=q)


def write_gguf(path, arch="llama", n_vocab=320, n_embd=64, n_layer=2, n_head=4, n_head_kv=2,
               n_ff=96, head_dim=None, tied=False, rope_theta=10000.0, rope_scaling=None,
               eps=1e-5, ctx=256, seed=0, weights=None, qtype=None):
    """Writes a model; returns its weights (float32 values as stored for F32)."""
    hd = head_dim or n_embd // n_head
    if weights is None:
        weights = random_weights(n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, hd,
                                 qkv_bias=(arch == "qwen2"), tied=tied, seed=seed)
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"synthetic {arch}")
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    if hd != n_embd // n_head:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(rope_theta)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(n_vocab)
    if rope_scaling is not None:
        kind, factor = rope_scaling
        if kind != "linear":
            raise ValueError("only linear RoPE scaling has GGUF metadata keys")
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    tokens, types, merges = make_vocab(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(n_vocab - 3)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(False)
    for name, a in weights.items():
        _store(w, name, a, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return weights


def permute_for_norm_rope(a, n_heads):
    """llama.cpp's convert permutation: per head, rows [0..d/2) and [d/2..d)
    interleave, so rotate-half on the original equals adjacent-pair on this."""
    return (a.reshape(n_heads, 2, a.shape[0] // n_heads // 2, *a.shape[1:])
            .swapaxes(1, 2).reshape(a.shape))


def weights_from_hf(hf, cfg):
    """GGUF-named weights from HF-named ones (Q/K permuted for llama)."""
    n_head = cfg["num_attention_heads"]
    n_head_kv = cfg.get("num_key_value_heads") or n_head
    llama = cfg["model_type"] != "qwen2"
    out = {"token_embd.weight": hf["model.embed_tokens.weight"]}
    for i in range(cfg["num_hidden_layers"]):
        p, g = f"model.layers.{i}.", f"blk.{i}."
        q, k = hf[p + "self_attn.q_proj.weight"], hf[p + "self_attn.k_proj.weight"]
        out[g + "attn_norm.weight"] = hf[p + "input_layernorm.weight"]
        out[g + "attn_q.weight"] = permute_for_norm_rope(q, n_head) if llama else q
        out[g + "attn_k.weight"] = permute_for_norm_rope(k, n_head_kv) if llama else k
        out[g + "attn_v.weight"] = hf[p + "self_attn.v_proj.weight"]
        for b, gb in (("q_proj.bias", "attn_q.bias"), ("k_proj.bias", "attn_k.bias"),
                      ("v_proj.bias", "attn_v.bias")):
            if p + "self_attn." + b in hf:
                out[g + gb] = hf[p + "self_attn." + b]
        out[g + "attn_output.weight"] = hf[p + "self_attn.o_proj.weight"]
        out[g + "ffn_norm.weight"] = hf[p + "post_attention_layernorm.weight"]
        out[g + "ffn_gate.weight"] = hf[p + "mlp.gate_proj.weight"]
        out[g + "ffn_up.weight"] = hf[p + "mlp.up_proj.weight"]
        out[g + "ffn_down.weight"] = hf[p + "mlp.down_proj.weight"]
    out["output_norm.weight"] = hf["model.norm.weight"]
    if "lm_head.weight" in hf:
        out["output.weight"] = hf["lm_head.weight"]
    return out


def write_gguf_from_hf(path, hf, cfg):
    n_head = cfg["num_attention_heads"]
    return write_gguf(
        path, arch="qwen2" if cfg["model_type"] == "qwen2" else "llama",
        n_vocab=cfg["vocab_size"], n_embd=cfg["hidden_size"], n_layer=cfg["num_hidden_layers"],
        n_head=n_head, n_head_kv=cfg.get("num_key_value_heads") or n_head,
        n_ff=cfg["intermediate_size"], tied="lm_head.weight" not in hf,
        rope_theta=cfg.get("rope_theta", 10000.0), eps=cfg.get("rms_norm_eps", 1e-6),
        ctx=cfg.get("max_position_embeddings", 256), weights=weights_from_hf(hf, cfg))


def write_gemma3_gguf(path, n_vocab=320, n_embd=64, n_layer=6, n_head=4, n_head_kv=2,
                      head_dim=32, n_ff=96, window=5, pattern=3, softcap=None,
                      theta_global=1e6, theta_local=1e4, eps=1e-6, ctx=256, seed=0):
    """A Gemma 3 GGUF as llama.cpp's converter writes one: norms stored as
    the multipliers (1 + w), output tied to the embedding, head_dim not
    n_embd / n_head. The sliding-window pattern is written only when it is
    not Gemma 3's 6. Returns the weights."""
    rng = np.random.default_rng(seed)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.3 * rng.standard_normal(n)).astype(np.float32)

    wts = {"token_embd.weight": (0.2 * rng.standard_normal((n_vocab, n_embd))).astype(np.float32)}
    for i in range(n_layer):
        p = f"blk.{i}."
        wts[p + "attn_norm.weight"] = norm(n_embd)
        wts[p + "attn_q.weight"] = mat(n_head * head_dim, n_embd)
        wts[p + "attn_k.weight"] = mat(n_head_kv * head_dim, n_embd)
        wts[p + "attn_v.weight"] = mat(n_head_kv * head_dim, n_embd)
        wts[p + "attn_q_norm.weight"] = norm(head_dim)
        wts[p + "attn_k_norm.weight"] = norm(head_dim)
        wts[p + "attn_output.weight"] = mat(n_embd, n_head * head_dim)
        wts[p + "post_attention_norm.weight"] = norm(n_embd)
        wts[p + "ffn_norm.weight"] = norm(n_embd)
        wts[p + "ffn_gate.weight"] = mat(n_ff, n_embd)
        wts[p + "ffn_up.weight"] = mat(n_ff, n_embd)
        wts[p + "ffn_down.weight"] = mat(n_embd, n_ff)
        wts[p + "post_ffw_norm.weight"] = norm(n_embd)
    wts["output_norm.weight"] = norm(n_embd)

    w = gguf.GGUFWriter(path, "gemma3")
    w.add_name("synthetic gemma3")
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(theta_global)
    w.add_uint32("gemma3.attention.sliding_window", window)
    if pattern != 6:
        w.add_uint32("gemma3.attention.sliding_window_pattern", pattern)
    if theta_local != 1e4:
        w.add_float32("gemma3.rope.freq_base_swa", theta_local)
    if softcap:
        w.add_float32("gemma3.final_logit_softcapping", softcap)
    tokens, types, merges = make_vocab(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(n_vocab - 3)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(False)
    for name, a in wts.items():
        _store(w, name, a, None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return wts
