"""Loading models from GGUF (runtime/io/model_gguf.c) through tests/tool_gguf_load.

  test_model_gguf.py TOOL          tiny llama / qwen2 files written with
                                   gguf.GGUFWriter: hyper-parameters and every
                                   weight compared with gguf's own reading of
                                   the file; bad files give clear errors
  test_model_gguf.py TOOL --real   the real default model: hyper-parameters,
                                   parameter count, a sample of weights
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "py"))

import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFValueType as VT  # noqa: E402

from gguf_fixtures import run, tiny_hparams, tiny_tensors, write_tiny_model  # noqa: E402
from testutil import fail, real_model_path, scratch_dir  # noqa: E402

TOOL = None
OUT = None


def load(path, dump_dir=None, names=()):
    cmd = [TOOL, path] + ([dump_dir] + list(names) if dump_dir else [])
    r = run(cmd)
    info = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition("\t")
        info[k] = v
    return r, info


def expect_loads(path, dump_dir=None, names=()):
    r, info = load(path, dump_dir, names)
    if r.returncode != 0:
        fail(f"{os.path.basename(path)} did not load: {r.stderr.strip()}")
    return info


def expect_error(path, status, *needles):
    t0 = time.monotonic()
    r, _ = load(path)
    elapsed = time.monotonic() - t0
    if r.returncode == 0:
        fail(f"{os.path.basename(path)} loaded; expected an error with {needles}")
    if r.returncode != 1:
        fail(f"{os.path.basename(path)}: exit status {r.returncode} (crash?): {r.stderr.strip()}")
    err = r.stderr.strip()
    parts = err.split("\t")
    if len(parts) != 3 or parts[0] != "error" or "\n" in err:
        fail(f"{os.path.basename(path)}: unexpected output: {err!r}")
    if parts[1] != status:
        fail(f"{os.path.basename(path)}: status '{parts[1]}', expected '{status}': {parts[2]}")
    for needle in (path,) + needles:
        if needle not in parts[2]:
            fail(f"{os.path.basename(path)}: expected {needle!r} in: {parts[2]}")
    if elapsed > 5:
        fail(f"{os.path.basename(path)}: the error took {elapsed:.1f} s")
    print(f"ok {os.path.basename(path)}: {parts[2][len(path) + 2:]}")


def check_weights(path, dump_dir, names=None):
    """Every dumped weight equals gguf's own dequantization of the file,
    reshaped to (out, in)."""
    ref = gguf.GGUFReader(path)
    count = 0
    for t in ref.tensors:
        if names is not None and t.name not in names:
            continue
        dumped = os.path.join(dump_dir, t.name + ".f32")
        if not os.path.exists(dumped):
            fail(f"{os.path.basename(path)}: {t.name} was not loaded")
        got = np.fromfile(dumped, dtype=np.float32)
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        want = want.reshape(-1, int(t.shape[0]))  # (out, in): ne[0] is the row
        if got.size != want.size or not np.array_equal(got.reshape(want.shape), want):
            diff = np.abs(got.reshape(want.shape) - want).max() if got.size == want.size else "size"
            fail(f"{os.path.basename(path)}: {t.name} ({t.tensor_type.name}) differs: {diff}")
        count += 1
        os.remove(dumped)
    return count


def expect_info(path, info, **want):
    for k, v in want.items():
        if info.get(k) != str(v):
            fail(f"{os.path.basename(path)}: {k} = {info.get(k)!r}, expected {v!r}")


# ------------------------------------------------------------ good files


def check_good_models():
    rng = np.random.default_rng(7)

    # llama, f32, tied embeddings
    hp = tiny_hparams()
    tokens, tensors = tiny_tensors(hp, rng)
    path = os.path.join(OUT, "tiny-llama.gguf")
    write_tiny_model(path, hp, tokens, tensors)
    dump = scratch_dir("gguf-model-dump")
    info = expect_loads(path, dump)
    expect_info(path, info, arch="llama", name="tiny-llama", source_format="gguf",
                n_vocab=len(tokens), n_embd=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=16,
                n_ff=96, n_ctx_train=256, rope_dim=16, rope_style=0, rope_scaling=0, tied=1,
                output_is_tok_embd=1, qkv_bias=0, n_params=sum(a.size for a in tensors.values()))
    if info.get("chat_template_len") == "0":
        fail("tiny-llama: the chat template was not kept")
    n = check_weights(path, dump)
    print(f"ok tiny-llama: hyper-parameters and {n} weights")

    # llama with every dequantizable type, untied output, linear rope scaling
    hp = tiny_hparams(n_layer=2, n_embd=256, n_head=4, n_head_kv=4, n_ff=512, tied=False)
    tokens, tensors = tiny_tensors(hp, rng)
    qtypes = {"output.weight": QT.Q6_K, "blk.0.attn_output.weight": QT.Q8_0,
              "blk.0.attn_q.weight": QT.Q4_0, "blk.0.attn_k.weight": QT.Q4_1,
              "blk.0.attn_v.weight": QT.Q5_0, "blk.0.ffn_gate.weight": QT.Q5_1,
              "blk.0.ffn_up.weight": QT.Q3_K, "blk.0.ffn_down.weight": QT.Q2_K,
              "output_norm.weight": QT.F16, "blk.0.attn_norm.weight": QT.BF16,
              "token_embd.weight": QT.Q5_K, "blk.0.ffn_norm.weight": QT.F16,
              "blk.1.ffn_gate.weight": QT.Q4_K, "blk.1.attn_q.weight": QT.Q8_0}
    path = os.path.join(OUT, "tiny-llama-quant.gguf")
    write_tiny_model(path, hp, tokens, tensors, qtypes,
                     metadata_override={"llama.rope.scaling.type": ("linear", VT.STRING),
                                        "llama.rope.scaling.factor": (4.0, VT.FLOAT32)})
    info = expect_loads(path, dump)
    expect_info(path, info, n_embd=256, n_ff=512, tied=0, output_is_tok_embd=0, rope_scaling=1,
                rope_factor=4)
    n = check_weights(path, dump)
    print(f"ok tiny-llama-quant: {n} weights of {len(set(qtypes.values()))} types")

    # qwen2: q/k/v biases, NEOX rope
    hp = tiny_hparams(arch="qwen2", tied=False)
    tokens, tensors = tiny_tensors(hp, rng)
    path = os.path.join(OUT, "tiny-qwen2.gguf")
    write_tiny_model(path, hp, tokens, tensors,
                     metadata_override={"qwen2.rope.freq_base": (1000000.0, VT.FLOAT32)})
    info = expect_loads(path, dump)
    expect_info(path, info, arch="qwen2", rope_style=1, qkv_bias=1, tied=0, rope_theta=1000000)
    n = check_weights(path, dump)
    print(f"ok tiny-qwen2: {n} weights including biases")

    # Llama 3.x: RoPE scaling stored as the rope_freqs.weight divisors
    hp = tiny_hparams(n_embd=256, n_head=2, n_head_kv=1, rope_theta=500000.0)
    tokens, tensors = tiny_tensors(hp, rng)
    tensors["rope_freqs.weight"] = llama3_divisors(128, 500000.0, 32.0, 1.0, 4.0, 8192)
    path = os.path.join(OUT, "tiny-llama3.gguf")
    write_tiny_model(path, hp, tokens, tensors)
    info = expect_loads(path)
    expect_info(path, info, head_dim=128, rope_scaling=2, rope_factor=32, rope_low_freq_factor=1,
                rope_high_freq_factor=4, rope_orig_ctx=8192)
    tensors["rope_freqs.weight"] = np.ones(64, np.float32)
    write_tiny_model(path, hp, tokens, tensors)
    expect_info(path, expect_loads(path), rope_scaling=0)
    print("ok tiny-llama3: Llama 3 RoPE scaling recovered from rope_freqs.weight")


def llama3_divisors(rope_dim, theta, factor, low, high, orig):
    """What a GGUF converter stores in rope_freqs.weight for Llama 3.1 RoPE
    scaling: base frequency / scaled frequency per rotated pair."""
    out = []
    for j in range(rope_dim // 2):
        freq = theta ** (-2.0 * j / rope_dim)
        wavelen = 2 * np.pi / freq
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


# ------------------------------------------------------------- bad files


def check_bad_models():
    rng = np.random.default_rng(8)
    hp = tiny_hparams()
    tokens, tensors = tiny_tensors(hp, rng)

    def bad(name, status, needles, hp_over=None, **kw):
        path = os.path.join(OUT, f"bad-{name}.gguf")
        write_tiny_model(path, dict(hp, **(hp_over or {})), tokens, tensors, **kw)
        expect_error(path, status, *needles)

    bad("falcon", "unsupported", ["architecture 'falcon' is not supported"], hp_over={"arch": "falcon"})
    bad("gemma3-no-window", "malformed input", ["missing metadata 'gemma3.attention.sliding_window'"],
        hp_over={"arch": "gemma3"})
    bad("block-count", "malformed input", ["n_layer = 1000000000 is out of range"],
        metadata_override={"llama.block_count": (1_000_000_000, VT.UINT32)})
    bad("embedding-length", "malformed input", ["'llama.embedding_length' = 1099511627776 is out of range"],
        metadata_override={"llama.embedding_length": (1 << 40, VT.UINT64)})
    bad("n-ff-huge", "malformed input", ["n_ff = 2000000000 is out of range"],
        metadata_override={"llama.feed_forward_length": (2_000_000_000, VT.UINT32)})
    bad("head-count-zero", "malformed input", ["n_head = 0 is out of range"],
        metadata_override={"llama.attention.head_count": (0, VT.UINT32)})
    bad("head-count-negative", "malformed input", ["'llama.attention.head_count' = -4 is out of range"],
        metadata_override={"llama.attention.head_count": (-4, VT.INT32)})
    bad("head-count-kv", "malformed input", ["n_head (4) is not a multiple of n_head_kv (3)"],
        metadata_override={"llama.attention.head_count_kv": (3, VT.UINT32)})
    bad("per-layer-ff", "unsupported", ["'llama.feed_forward_length' is a per-layer array"],
        metadata_override={"llama.feed_forward_length": ([96, 96], VT.ARRAY)})
    bad("block-count-string", "malformed input", ["'llama.block_count' must be an integer"],
        metadata_override={"llama.block_count": ("2", VT.STRING)})
    bad("no-context-length", "malformed input", ["missing metadata 'llama.context_length'"],
        drop_keys=["llama.context_length"])
    bad("no-rms-eps", "malformed input", ["missing metadata 'llama.attention.layer_norm_rms_epsilon'"],
        drop_keys=["llama.attention.layer_norm_rms_epsilon"])
    bad("rope-yarn", "unsupported", ["rope scaling type 'yarn' is not supported"],
        metadata_override={"llama.rope.scaling.type": ("yarn", VT.STRING)})
    bad("missing-tensor", "malformed input", ["missing tensor 'blk.1.ffn_up.weight'"],
        tensor_override={"blk.1.ffn_up.weight": None})
    bad("missing-embedding", "malformed input", ["missing tensor 'token_embd.weight'"],
        tensor_override={"token_embd.weight": None})
    bad("wrong-shape", "malformed input",
        ["tensor 'blk.0.attn_q.weight' has shape [64, 48], expected [64, 64]"],
        tensor_override={"blk.0.attn_q.weight": np.zeros((48, 64), np.float32)})
    bad("wrong-embedding", "malformed input",
        ["tensor 'token_embd.weight' has shape [32, 260], expected [64, 260]"],
        tensor_override={"token_embd.weight": np.zeros((260, 32), np.float32)})
    bad("norm-as-matrix", "malformed input",
        ["tensor 'output_norm.weight' has shape [64, 2], expected [64]"],
        tensor_override={"output_norm.weight": np.zeros((2, 64), np.float32)})
    bad("rope-freqs", "unsupported", ["'rope_freqs.weight' does not follow the Llama 3 RoPE"],
        tensor_override={"rope_freqs.weight": np.linspace(1, 3, 8).astype(np.float32)})
    bad("rope-freqs-size", "malformed input", ["'rope_freqs.weight' must be 8 numbers"],
        tensor_override={"rope_freqs.weight": np.ones(9, np.float32)})
    bad("i32-weight", "unsupported", ["tensor 'blk.0.attn_norm.weight' has type I32"],
        tensor_override={"blk.0.attn_norm.weight": np.zeros(64, np.int32)})
    bad("no-tokens", "malformed input", ["tokenizer.ggml.tokens"],
        drop_keys=["tokenizer.ggml.tokens"])
    qhp = dict(hp, arch="qwen2")
    qtokens, qtensors = tiny_tensors(qhp, rng)
    path = os.path.join(OUT, "bad-qwen2-no-bias.gguf")
    write_tiny_model(path, qhp, qtokens, qtensors, tensor_override={"blk.1.attn_k.bias": None})
    expect_error(path, "malformed input", "missing tensor 'blk.1.attn_k.bias'")

    # not a GGUF file at all, and a truncated one
    path = os.path.join(OUT, "bad-not-gguf.gguf")
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 not a model")
    expect_error(path, "malformed input", "not a GGUF file")
    good = os.path.join(OUT, "tiny-llama.gguf")
    path = os.path.join(OUT, "bad-truncated.gguf")
    with open(good, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) - 100])
    expect_error(path, "malformed input", "truncated")


# ------------------------------------------------------------ real model


def check_real_model():
    path = real_model_path()
    if not os.path.exists(path):
        fail(f"the real model is not at {path} (run `trimlm pull` or set TLM_MODEL_PATH)")
    ref = gguf.GGUFReader(path)
    names = ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight",
             "blk.0.attn_k.weight", "blk.14.ffn_down.weight", "blk.29.ffn_gate.weight",
             "blk.29.attn_norm.weight", "blk.29.attn_output.weight"]
    dump = scratch_dir("gguf-model-real")
    info = expect_loads(path, dump, names)
    expect_info(path, info, arch="llama", n_vocab=49152, n_embd=576, n_layer=30, n_head=9,
                n_head_kv=3, head_dim=64, n_ff=1536, n_ctx_train=8192, rope_theta=100000,
                rope_dim=64, rope_style=0, tied=1, output_is_tok_embd=1, qkv_bias=0,
                n_params=sum(int(t.n_elements) for t in ref.tensors))
    n = check_weights(path, dump, set(names))
    print(f"ok real model: hyper-parameters, parameter count, {n} weights; "
          f"load took {info['load_ms']} ms")


def main():
    global TOOL, OUT
    if len(sys.argv) < 2:
        fail("usage: test_model_gguf.py TOOL [--real]")
    TOOL = sys.argv[1]
    OUT = scratch_dir("gguf-model")
    if "--real" in sys.argv[2:]:
        check_real_model()
    else:
        check_good_models()
        check_bad_models()


if __name__ == "__main__":
    main()
