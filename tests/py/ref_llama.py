"""Independent numpy reference of the llama-family forward pass (llama, qwen2).

Written from the math, not from the C runtime:

    x = embed[token]
    per layer:  h = rmsnorm(x) * attn_norm
                q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv); RoPE on q and k
                x += softmax(q k^T / sqrt(head_dim) + causal mask) v  Wo^T   (GQA)
                h = rmsnorm(x) * ffn_norm
                x += (silu(h Wg^T) * (h Wu^T)) Wd^T
    logits = (rmsnorm(x) * out_norm) output^T

Weights come from a GGUF file (gguf.GGUFReader + gguf.quants.dequantize) or a
Hugging Face directory (config.json + safetensors, read here with a few lines
of header parsing so that bf16 works without torch). RoPE pairs follow the
source: GGUF llama files store Q/K permuted for adjacent pairs (2i, 2i+1);
HF checkpoints and GGUF qwen2 rotate halves (i, i + d/2).

    python ref_llama.py MODEL --tokens 1,2,3 [--generate N] [--out FILE]
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np


class HParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Model:
    """hp: HParams; w: dict of float arrays in (out, in) layout."""

    def __init__(self, hp, tok_embd, layers, out_norm, output):
        self.hp = hp
        self.tok_embd = tok_embd
        self.layers = layers
        self.out_norm = out_norm
        self.output = output

    def session(self, skip_attn=(), skip_mlp=()):
        """skip_attn / skip_mlp: layer indices whose attention / MLP sublayer
        is left out (x passes through unchanged), as in a model converted
        with those sublayers dropped."""
        return Session(self, skip_attn, skip_mlp)


# ------------------------------------------------------------------ GGUF


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def load_gguf(path, dtype=np.float64):
    import gguf

    r = gguf.GGUFReader(path)
    arch = _field(r, "general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"{path}: architecture {arch!r} not supported by the reference")

    def key(k, default=None):
        return _field(r, f"{arch}.{k}", default)

    tensors = {}
    for t in r.tensors:
        ne0 = int(t.shape[0])
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(dtype).reshape(-1, ne0)
        if len(t.shape) == 1:
            a = a.reshape(-1)
        tensors[t.name] = a

    n_embd = int(key("embedding_length"))
    n_head = int(key("attention.head_count"))
    n_head_kv = int(key("attention.head_count_kv", n_head))
    head_dim = int(key("attention.key_length", n_embd // n_head))
    scaling = None
    stype = key("rope.scaling.type")
    if stype == "linear":
        scaling = ("linear", float(key("rope.scaling.factor")))
    hp = HParams(
        arch=arch,
        n_vocab=tensors["token_embd.weight"].shape[0],
        n_embd=n_embd,
        n_layer=int(key("block_count")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ff=int(key("feed_forward_length")),
        eps=float(key("attention.layer_norm_rms_epsilon")),
        theta=float(key("rope.freq_base", 10000.0)),
        rope_dim=int(key("rope.dimension_count", head_dim)),
        rope_style="norm" if arch == "llama" else "neox",
        scaling=scaling,
        freq_factors=tensors.get("rope_freqs.weight"),
    )
    layers = []
    for i in range(hp.n_layer):
        p = f"blk.{i}."
        layers.append({
            "attn_norm": tensors[p + "attn_norm.weight"],
            "wq": tensors[p + "attn_q.weight"],
            "wk": tensors[p + "attn_k.weight"],
            "wv": tensors[p + "attn_v.weight"],
            "bq": tensors.get(p + "attn_q.bias"),
            "bk": tensors.get(p + "attn_k.bias"),
            "bv": tensors.get(p + "attn_v.bias"),
            "wo": tensors[p + "attn_output.weight"],
            "ffn_norm": tensors[p + "ffn_norm.weight"],
            "w_gate": tensors[p + "ffn_gate.weight"],
            "w_up": tensors[p + "ffn_up.weight"],
            "w_down": tensors[p + "ffn_down.weight"],
        })
    output = tensors.get("output.weight", tensors["token_embd.weight"])
    return Model(hp, tensors["token_embd.weight"], layers, tensors["output_norm.weight"], output)


# ------------------------------------------------------------ HF directory


def _read_safetensors(path, dtype):
    out = {}
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        base = 8 + hlen
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            f.seek(base + a)
            raw = f.read(b - a)
            st = info["dtype"]
            if st == "F32":
                arr = np.frombuffer(raw, dtype="<f4")
            elif st == "F16":
                arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
            elif st == "BF16":
                arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise ValueError(f"{path}: tensor {name} has dtype {st}")
            out[name] = arr.astype(dtype).reshape(info["shape"])
    return out


def load_hf(dir_path, dtype=np.float64):
    with open(os.path.join(dir_path, "config.json")) as f:
        cfg = json.load(f)
    tensors = {}
    index = os.path.join(dir_path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        tensors.update(_read_safetensors(os.path.join(dir_path, fn), dtype))

    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    scaling = None
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            scaling = ("linear", float(rs["factor"]))
        elif kind == "llama3":
            scaling = ("llama3", float(rs["factor"]), float(rs["low_freq_factor"]),
                       float(rs["high_freq_factor"]), float(rs["original_max_position_embeddings"]))
        elif kind != "default":
            raise ValueError(f"{dir_path}: rope scaling {kind!r} not supported by the reference")
    hp = HParams(
        arch=cfg["model_type"],
        n_vocab=cfg["vocab_size"],
        n_embd=cfg["hidden_size"],
        n_layer=cfg["num_hidden_layers"],
        n_head=n_head,
        n_head_kv=cfg.get("num_key_value_heads") or n_head,
        head_dim=head_dim,
        n_ff=cfg["intermediate_size"],
        eps=float(cfg.get("rms_norm_eps", 1e-6)),
        theta=float(cfg.get("rope_theta", 10000.0)),
        rope_dim=int(head_dim * cfg.get("partial_rotary_factor", 1.0)),
        rope_style="neox",
        scaling=scaling,
        freq_factors=None,
    )
    layers = []
    for i in range(hp.n_layer):
        p = f"model.layers.{i}."
        layers.append({
            "attn_norm": tensors[p + "input_layernorm.weight"],
            "wq": tensors[p + "self_attn.q_proj.weight"],
            "wk": tensors[p + "self_attn.k_proj.weight"],
            "wv": tensors[p + "self_attn.v_proj.weight"],
            "bq": tensors.get(p + "self_attn.q_proj.bias"),
            "bk": tensors.get(p + "self_attn.k_proj.bias"),
            "bv": tensors.get(p + "self_attn.v_proj.bias"),
            "wo": tensors[p + "self_attn.o_proj.weight"],
            "ffn_norm": tensors[p + "post_attention_layernorm.weight"],
            "w_gate": tensors[p + "mlp.gate_proj.weight"],
            "w_up": tensors[p + "mlp.up_proj.weight"],
            "w_down": tensors[p + "mlp.down_proj.weight"],
        })
    embd = tensors["model.embed_tokens.weight"]
    output = tensors.get("lm_head.weight", embd)
    return Model(hp, embd, layers, tensors["model.norm.weight"], output)


def load(path, dtype=np.float64):
    return load_hf(path, dtype) if os.path.isdir(path) else load_gguf(path, dtype)


# ------------------------------------------------------------------ math


def rms_norm(x, w, eps):
    ms = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
    return (x / np.sqrt(ms + eps).astype(x.dtype)) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_inv_freq(hp):
    """Radians per position for each rotated pair, after scaling (float64)."""
    d = hp.rope_dim
    inv = 1.0 / (hp.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    if hp.scaling is not None and hp.scaling[0] == "linear":
        inv = inv / hp.scaling[1]
    elif hp.scaling is not None and hp.scaling[0] == "llama3":
        _, factor, low, high, orig = hp.scaling
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < orig / high:          # high frequency: unchanged
                out.append(f)
            elif wavelen > orig / low:         # low frequency: slowed down
                out.append(f / factor)
            else:                              # in between: interpolate
                s = (orig / wavelen - low) / (high - low)
                out.append((1 - s) * f / factor + s * f)
        inv = np.array(out, dtype=np.float64)
    if hp.freq_factors is not None:
        inv = inv / np.asarray(hp.freq_factors, dtype=np.float64)
    return inv


def apply_rope(x, positions, inv_freq, hp):
    """x: (n, heads, head_dim); rotates the first rope_dim dims of each head."""
    d = hp.rope_dim
    ang = np.outer(positions.astype(np.float64), inv_freq)      # (n, d/2)
    cos = np.cos(ang)[:, None, :].astype(x.dtype)
    sin = np.sin(ang)[:, None, :].astype(x.dtype)
    out = x.copy()
    if hp.rope_style == "norm":
        a, b = x[..., 0:d:2], x[..., 1:d:2]
        out[..., 0:d:2] = a * cos - b * sin
        out[..., 1:d:2] = a * sin + b * cos
    else:
        a, b = x[..., : d // 2], x[..., d // 2 : d]
        out[..., : d // 2] = a * cos - b * sin
        out[..., d // 2 : d] = b * cos + a * sin
    return out


def softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


class Session:
    """Incremental decoding with a KV cache (lists of (T, n_head_kv, head_dim))."""

    def __init__(self, model, skip_attn=(), skip_mlp=()):
        self.m = model
        self.skip_attn = set(skip_attn)
        self.skip_mlp = set(skip_mlp)
        self.pos = 0
        hp = model.hp
        self.inv_freq = rope_inv_freq(hp)
        dt = model.tok_embd.dtype
        self.k = [np.zeros((0, hp.n_head_kv, hp.head_dim), dtype=dt) for _ in range(hp.n_layer)]
        self.v = [np.zeros((0, hp.n_head_kv, hp.head_dim), dtype=dt) for _ in range(hp.n_layer)]

    def forward(self, tokens, want_logits=True):
        """Runs tokens at positions pos..pos+n-1; returns logits (n, n_vocab)."""
        m, hp = self.m, self.m.hp
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        positions = np.arange(self.pos, self.pos + n)
        x = m.tok_embd[tokens].copy()                                   # (n, E)
        for li, L in enumerate(m.layers):
            if li not in self.skip_attn:
                x = self._attention(li, L, x, positions)
            if li not in self.skip_mlp:
                h = rms_norm(x, L["ffn_norm"], hp.eps)
                x = x + (silu(h @ L["w_gate"].T) * (h @ L["w_up"].T)) @ L["w_down"].T
        self.pos += n
        if not want_logits:
            return None
        return rms_norm(x, m.out_norm, hp.eps) @ m.output.T

    def _attention(self, li, L, x, positions):
        """x + the attention sublayer of layer li (appends to its KV cache)."""
        hp = self.m.hp
        n = x.shape[0]
        group = hp.n_head // hp.n_head_kv
        h = rms_norm(x, L["attn_norm"], hp.eps)
        q = h @ L["wq"].T
        k = h @ L["wk"].T
        v = h @ L["wv"].T
        if L["bq"] is not None:
            q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
        q = apply_rope(q.reshape(n, hp.n_head, hp.head_dim), positions, self.inv_freq, hp)
        k = apply_rope(k.reshape(n, hp.n_head_kv, hp.head_dim), positions, self.inv_freq, hp)
        v = v.reshape(n, hp.n_head_kv, hp.head_dim)
        self.k[li] = np.concatenate([self.k[li], k])
        self.v[li] = np.concatenate([self.v[li], v])
        K = np.repeat(self.k[li], group, axis=1)                   # (T, H, hd)
        V = np.repeat(self.v[li], group, axis=1)
        T = K.shape[0]
        scores = np.einsum("nhd,thd->hnt", q, K) / math.sqrt(hp.head_dim)
        causal = np.arange(T)[None, :] > positions[:, None]         # (n, T)
        scores = np.where(causal[None], -np.inf, scores)
        att = np.einsum("hnt,thd->nhd", softmax(scores), V).reshape(n, hp.n_head * hp.head_dim)
        return x + att @ L["wo"].T


def greedy(model, prompt, n_new):
    """Greedy continuation; returns (tokens, top-2 logit gap at each step,
    logits of the last prompt token)."""
    s = model.session()
    logits = prompt_logits = s.forward(prompt)[-1]
    out, gaps = [], []
    for i in range(n_new):
        top2 = np.sort(logits)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        tok = int(np.argmax(logits))
        out.append(tok)
        if i + 1 < n_new:
            logits = s.forward([tok])[-1]
    return out, gaps, prompt_logits


def calibration_stats(model, sequences, drop_attn=(), drop_mlp=()):
    """What the fused calibration pass measures (arXiv 2406.15786), from a
    plain forward over each sequence at positions 0..len-1:

      attn[l]  = mean over tokens of 1 - cos(X, X + attn(norm(X))), X the
                 residual stream entering layer l;
      mlp[l]   = the same for the MLP with X the stream entering it;
      block[l] = 1 - cos(block input, block output);
      qkv[l], attn_out[l], ffn[l], down[l] = mean over tokens of x^2 per
                 channel of the inputs of Wq/Wk/Wv, Wo, Wgate/Wup, Wdown;
      output   = the same for the output head's input (final norm).

    Sublayers in drop_attn / drop_mlp are left out (the residual passes
    through); their scores are NaN and statistics None. Computed in the
    model's dtype (float64 from load()); returns a dict of numpy arrays."""
    hp = model.hp
    nl = hp.n_layer
    inv_freq = rope_inv_freq(hp)
    group = hp.n_head // hp.n_head_kv
    cos_sum = {k: np.zeros(nl) for k in ("attn", "mlp", "block")}
    sq = {k: [None] * nl for k in ("qkv", "attn_out", "ffn", "down")}
    out_sq = None
    n_total = 0

    def cosine(a, b):
        return np.sum(a * b, axis=1) / np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))

    def add(key, li, x):
        s = np.sum(x * x, axis=0)
        sq[key][li] = s if sq[key][li] is None else sq[key][li] + s

    for seq in sequences:
        tokens = np.asarray(seq, dtype=np.int64)
        n = len(tokens)
        n_total += n
        positions = np.arange(n)
        x = model.tok_embd[tokens].copy()
        for li, L in enumerate(model.layers):
            x_block = x
            if li not in drop_attn:
                h = rms_norm(x, L["attn_norm"], hp.eps)
                add("qkv", li, h)
                q, k, v = h @ L["wq"].T, h @ L["wk"].T, h @ L["wv"].T
                if L["bq"] is not None:
                    q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
                q = apply_rope(q.reshape(n, hp.n_head, hp.head_dim), positions, inv_freq, hp)
                k = apply_rope(k.reshape(n, hp.n_head_kv, hp.head_dim), positions, inv_freq, hp)
                K = np.repeat(k, group, axis=1)
                V = np.repeat(v.reshape(n, hp.n_head_kv, hp.head_dim), group, axis=1)
                scores = np.einsum("nhd,thd->hnt", q, K) / math.sqrt(hp.head_dim)
                scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1)[None], -np.inf, scores)
                att = np.einsum("hnt,thd->nhd", softmax(scores), V).reshape(n, -1)
                add("attn_out", li, att)
                y = x + att @ L["wo"].T
                cos_sum["attn"][li] += cosine(x, y).sum()
                x = y
            if li not in drop_mlp:
                h = rms_norm(x, L["ffn_norm"], hp.eps)
                add("ffn", li, h)
                d = silu(h @ L["w_gate"].T) * (h @ L["w_up"].T)
                add("down", li, d)
                y = x + d @ L["w_down"].T
                cos_sum["mlp"][li] += cosine(x, y).sum()
                x = y
            cos_sum["block"][li] += cosine(x_block, x).sum()
        h = rms_norm(x, model.out_norm, hp.eps)
        s = np.sum(h * h, axis=0)
        out_sq = s if out_sq is None else out_sq + s

    res = {k: 1.0 - v / n_total for k, v in cos_sum.items()}
    for li in drop_attn:
        res["attn"][li] = np.nan
    for li in drop_mlp:
        res["mlp"][li] = np.nan
    for k, v in sq.items():
        res[k] = [None if a is None else a / n_total for a in v]
    res["output"] = out_sq / n_total
    res["n_tokens"] = n_total
    return res


def calibration_sequences(text_tokens, n_tokens, seq_len, bos=None):
    """The calibration pass's sequences: seq_len tokens each (a BOS first when
    given, counted in seq_len), n_tokens in all or until the text ends; a
    sequence shorter than 2 tokens is not run."""
    seqs, at, total = [], 0, 0
    head = [] if bos is None else [bos]
    while total < n_tokens and at < len(text_tokens):
        length = min(seq_len, n_tokens - total)
        take = min(length - len(head), len(text_tokens) - at)
        if len(head) + take < 2:
            break
        seqs.append(head + list(text_tokens[at:at + take]))
        at += take
        total += len(head) + take
    return seqs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--generate", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--f32", action="store_true", help="compute in float32 (default float64)")
    a = ap.parse_args()
    model = load(a.model, np.float32 if a.f32 else np.float64)
    toks = [int(t) for t in a.tokens.split(",")]
    if a.generate:
        gen, _, _ = greedy(model, toks, a.generate)
        text = ",".join(map(str, gen))
        if a.out:
            with open(a.out, "w") as f:
                f.write(text + "\n")
        print(text)
    else:
        logits = model.session().forward(toks).astype(np.float32)
        if a.out:
            logits.tofile(a.out)
        print(logits.shape, file=sys.stderr)


if __name__ == "__main__":
    main()
