"""Independent numpy reference of the Gemma 3 text forward pass.

Written from the architecture's definition (Gemma 3 technical report and
its published configuration), not from the C runtime:

    x = embed[token] * sqrt(n_embd)
    per layer il (local when (il + 1) % pattern != 0, else global):
        h = rmsnorm(x) * attn_norm
        q, k, v = h Wq^T, h Wk^T, h Wv^T          per head of head_dim
        q = rmsnorm(q) * q_norm; k = rmsnorm(k) * k_norm   (per head)
        RoPE, rotate-half pairs, base theta_local or theta_global
        a = softmax(scale * q k^T + mask) v        (GQA; scale = 1/sqrt(head_dim)
            by default; mask: causal, and on a local layer key position
            p > query position - window)
        x += rmsnorm(a Wo^T) * post_attention_norm
        h = rmsnorm(x) * ffn_norm
        x += rmsnorm((gelu_tanh(h Wg^T) * h Wu^T) Wd^T) * post_ffw_norm
    logits = (rmsnorm(x) * output_norm) embed^T, then cap * tanh(logits / cap)
    when the model has a final soft-cap.

Norm weights are the multipliers (GGUF files from llama.cpp store 1 + w of
the Hugging Face checkpoint). Weights come from a GGUF file through
gguf.GGUFReader and gguf.quants.dequantize.

    python ref_gemma3.py MODEL --tokens 2,100,200 [--generate N] [--dtype f32]
"""

import argparse
import math
import sys

import numpy as np


def _field(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


class Model:
    pass


def load_gguf(path, dtype=np.float64):
    import gguf

    r = gguf.GGUFReader(path)
    if _field(r, "general.architecture") != "gemma3":
        raise ValueError(f"{path}: not a gemma3 GGUF")
    key = lambda k, d=None: _field(r, "gemma3." + k, d)  # noqa: E731
    t = {}
    for ten in r.tensors:
        a = gguf.quants.dequantize(ten.data, ten.tensor_type).astype(dtype)
        t[ten.name] = a.reshape(-1) if len(ten.shape) == 1 else a.reshape(-1, int(ten.shape[0]))
    m = Model()
    m.n_embd = int(key("embedding_length"))
    m.n_layer = int(key("block_count"))
    m.n_head = int(key("attention.head_count"))
    m.n_head_kv = int(key("attention.head_count_kv", m.n_head))
    m.head_dim = int(key("attention.key_length", m.n_embd // m.n_head))
    m.eps = float(key("attention.layer_norm_rms_epsilon"))
    m.theta_global = float(key("rope.freq_base", 10000.0))
    m.theta_local = float(key("rope.freq_base_swa", 10000.0))
    m.window = int(key("attention.sliding_window"))
    m.pattern = int(key("attention.sliding_window_pattern", 6))
    m.scale = float(key("attention.scale", 0.0)) or 1.0 / math.sqrt(m.head_dim)
    m.softcap = float(key("final_logit_softcapping", 0.0))
    m.embd = t["token_embd.weight"]
    m.output = t.get("output.weight", m.embd)
    m.out_norm = t["output_norm.weight"]
    names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm",
             "attn_k_norm", "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
             "post_ffw_norm"]
    m.layers = [{n: t[f"blk.{i}.{n}.weight"] for n in names} for i in range(m.n_layer)]
    return m


def is_local(m, il):
    return (il + 1) % m.pattern != 0


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def rope(x, pos, theta):
    """x: (n, heads, d), rotate-half pairs (i, i + d/2)."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.outer(pos.astype(np.float64), inv)
    c, s = np.cos(ang)[:, None, :].astype(x.dtype), np.sin(ang)[:, None, :].astype(x.dtype)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


class Session:
    """Incremental decoding; skip_attn / skip_mlp: layers whose sublayer is
    left out (x unchanged), as in a model converted with them dropped."""

    def __init__(self, m, skip_attn=(), skip_mlp=()):
        self.m, self.pos = m, 0
        self.skip_attn, self.skip_mlp = set(skip_attn), set(skip_mlp)
        z = np.zeros((0, m.n_head_kv, m.head_dim), dtype=m.embd.dtype)
        self.k = [z] * m.n_layer
        self.v = [z] * m.n_layer

    def forward(self, tokens):
        m = self.m
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        pos = np.arange(self.pos, self.pos + n)
        x = m.embd[tokens] * np.asarray(math.sqrt(m.n_embd), dtype=m.embd.dtype)
        for il, L in enumerate(m.layers):
            if il not in self.skip_attn:
                x = x + rms_norm(self._attention(il, L, x, pos) @ L["attn_output"].T,
                                 L["post_attention_norm"], m.eps)
            if il not in self.skip_mlp:
                h = rms_norm(x, L["ffn_norm"], m.eps)
                y = (gelu_tanh(h @ L["ffn_gate"].T) * (h @ L["ffn_up"].T)) @ L["ffn_down"].T
                x = x + rms_norm(y, L["post_ffw_norm"], m.eps)
        self.pos += n
        logits = rms_norm(x, m.out_norm, m.eps) @ m.output.T
        if m.softcap > 0:
            logits = m.softcap * np.tanh(logits / m.softcap)
        return logits

    def _attention(self, il, L, x, pos):
        """The attention output before Wo: (n, n_head * head_dim)."""
        m = self.m
        n, hd = x.shape[0], m.head_dim
        h = rms_norm(x, L["attn_norm"], m.eps)
        q = rms_norm((h @ L["attn_q"].T).reshape(n, m.n_head, hd), L["attn_q_norm"], m.eps)
        k = rms_norm((h @ L["attn_k"].T).reshape(n, m.n_head_kv, hd), L["attn_k_norm"], m.eps)
        v = (h @ L["attn_v"].T).reshape(n, m.n_head_kv, hd)
        theta = m.theta_local if is_local(m, il) else m.theta_global
        q, k = rope(q, pos, theta), rope(k, pos, theta)
        self.k[il] = np.concatenate([self.k[il], k])
        self.v[il] = np.concatenate([self.v[il], v])
        group = m.n_head // m.n_head_kv
        K = np.repeat(self.k[il], group, axis=1)
        V = np.repeat(self.v[il], group, axis=1)
        key_pos = np.arange(K.shape[0])
        hidden = key_pos[None, :] > pos[:, None]
        if is_local(m, il):
            hidden |= key_pos[None, :] <= pos[:, None] - m.window
        s = np.einsum("nhd,thd->hnt", q, K) * m.scale
        s = np.where(hidden[None], -np.inf, s)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        p = s / s.sum(axis=-1, keepdims=True)
        return np.einsum("hnt,thd->nhd", p, V).reshape(n, m.n_head * hd)


def greedy(m, prompt, n_new):
    """Greedy continuation: (tokens, top-2 logit gap at each step)."""
    s = Session(m)
    logits = s.forward(prompt)[-1]
    out, gaps = [], []
    for i in range(n_new):
        top2 = np.sort(logits)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        out.append(int(np.argmax(logits)))
        if i + 1 < n_new:
            logits = s.forward([out[-1]])[-1]
    return out, gaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--generate", type=int, default=0)
    ap.add_argument("--dtype", default="f64", choices=["f64", "f32"])
    ap.add_argument("--out")
    a = ap.parse_args()
    m = load_gguf(a.model, np.float64 if a.dtype == "f64" else np.float32)
    toks = [int(x) for x in a.tokens.split(",")]
    if a.generate:
        out, gaps = greedy(m, toks, a.generate)
        print(",".join(map(str, out)))
        print("min top-2 gap %.4f" % min(gaps), file=sys.stderr)
    else:
        logits = Session(m).forward(toks)
        if a.out:
            logits.astype(np.float32).tofile(a.out)
        print(logits.shape)


if __name__ == "__main__":
    main()
