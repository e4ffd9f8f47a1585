"""Hugging Face directory import: tiny synthetic checkpoints written by
hf_fixtures.py are loaded with tool_hf_check (tlm_model_load + a JSON dump of
the model info and per-weight checksums) and compared with what was written.
Broken directories must give one clear error line and a non-zero exit.

usage: test_hf_import.py TOOL_HF_CHECK
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np

import hf_fixtures as hf

TOOL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ["TLM_BUILD"], "tests", "tool_hf_check")
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "hf_import")

failures = []


def fail(case, msg):
    failures.append(f"{case}: {msg}")
    print(f"FAIL {case}: {msg}")


def run_tool(path):
    p = subprocess.run([TOOL, path], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def fresh_dir(name):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


# ------------------------------------------------------------------ expected values


def checksums(a):
    """[sum, weighted sum] as tool_hf_check computes them (float64)."""
    flat = np.asarray(a, dtype=np.float64).ravel()
    weights = (np.arange(flat.size) % 13) - 6
    return float(flat.sum()), float((flat * weights).sum())


def check_loaded(case, path, cfg, weights, expect=None):
    rc, out, err = run_tool(path)
    if rc != 0:
        fail(case, f"load failed (rc {rc}): {err.strip()}")
        return None
    info = json.loads(out)
    n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff = hf.config_dims(cfg)
    tied = bool(cfg.get("tie_word_embeddings", False))
    arch = "qwen2" if hf.has_qkv_bias(cfg) else "llama"
    held = {k: v for k, v in weights.items() if not (tied and k == "lm_head.weight")}
    want = {
        "arch": arch,
        "name": os.path.basename(os.path.normpath(path)),
        "source_format": "safetensors",
        "n_vocab": n_vocab, "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head,
        "n_head_kv": n_head_kv, "head_dim": head_dim, "n_ff": n_ff,
        "n_ctx_train": cfg.get("max_position_embeddings"),
        "tied_embeddings": tied,
        "output_is_tok_embd": tied,
        "n_params": int(sum(v.size for v in held.values())),
        "qkv_bias": arch == "qwen2",
        "rope_style": 1,  # rotate-half, never permuted
        "rope_dim": head_dim,
        "rope_scaling": 0,
    }
    want.update(expect or {})
    for k, v in want.items():
        if info.get(k) != v:
            fail(case, f"{k} = {info.get(k)!r}, expected {v!r}")
    for k, v in (("rope_theta", cfg.get("rope_theta", 10000.0)), ("rms_eps", cfg.get("rms_norm_eps", 1e-6))):
        if not np.isclose(info[k], v, rtol=1e-6):
            fail(case, f"{k} = {info[k]}, expected {v}")

    got = info["checksums"]
    if set(got) != set(held):
        fail(case, f"weights held differ: extra {sorted(set(got) - set(held))}, "
                   f"missing {sorted(set(held) - set(got))}")
    for name in sorted(set(got) & set(held)):
        a = held[name]
        plain, weighted = checksums(a)
        scale = float(np.abs(a.astype(np.float64)).sum()) * 6 + 1e-30
        g_plain, g_weighted, g_n = got[name]
        if g_n != a.size:
            fail(case, f"{name}: {g_n} elements, expected {a.size}")
        if abs(g_plain - plain) > 1e-9 * scale or abs(g_weighted - weighted) > 1e-9 * scale:
            fail(case, f"{name}: checksums {g_plain, g_weighted}, expected {plain, weighted}")
    return info


# ------------------------------------------------------------------ the fixture writer


def test_fixture_writer():
    """The files hf_fixtures writes read back through the reference `safetensors`
    package (f32/f16), and its bf16 rounding is round-to-nearest-even."""
    from safetensors.numpy import load_file

    d = fresh_dir("fixture-check")
    cfg = hf.qwen2_config()
    for dtype in ("f32", "f16"):
        w = hf.write_model_dir(d, cfg, seed=1, dtype=dtype, shards=2)
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            weight_map = json.load(f)["weight_map"]
        if set(weight_map) != set(w):
            fail("fixture-check", "index does not list every tensor")
        for shard in sorted(set(weight_map.values())):
            for name, a in load_file(os.path.join(d, shard)).items():
                if weight_map[name] != shard or not np.array_equal(a.astype(np.float32), w[name]):
                    fail("fixture-check", f"{dtype} {name} differs when read by safetensors")
    bits = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x3F818001, 0xBF7FFFFF], dtype=np.uint32)
    got = hf.f32_to_bf16_bits(bits.view(np.float32))
    if got.tolist() != [0x3F80, 0x3F80, 0x3F82, 0x3F82, 0xBF80]:
        fail("fixture-check", f"bf16 rounding gives {[hex(int(x)) for x in got]}")
    tok = hf.make_bytelevel_tokenizer(cfg["vocab_size"])
    text = "Hello wörld 😀 <|im_start|>"
    if tok.decode(tok.encode(text).ids, skip_special_tokens=False) != text:
        fail("fixture-check", "test tokenizer does not round-trip text")


# ------------------------------------------------------------------ loading


def test_good_models():
    cases = [
        ("llama-untied-f32", hf.llama_config(), "f32", 1, {}),
        ("llama-tied-f16", hf.llama_config(tie_word_embeddings=True), "f16", 1, {}),
        ("llama-bf16-sharded", hf.llama_config(num_hidden_layers=3), "bf16", 3, {}),
        ("mistral-bf16", hf.mistral_config(), "bf16", 2, {}),
        ("qwen2-biases", hf.qwen2_config(), "f32", 2, {}),
        ("qwen2-untied-f16", hf.qwen2_config(tie_word_embeddings=False), "f16", 1, {}),
        ("llama-mha", hf.llama_config(num_key_value_heads=None), "f32", 1, {}),
    ]
    for i, (case, cfg, dtype, shards, expect) in enumerate(cases):
        d = fresh_dir(case)
        w = hf.write_model_dir(d, cfg, seed=10 + i, dtype=dtype, shards=shards)
        info = check_loaded(case, d, cfg, w, expect)
        if info and info["chat_template"] != hf.CHATML_TEMPLATE:
            fail(case, "chat template not taken from tokenizer_config.json")
        if info and info["eos"] != cfg["vocab_size"] - 1:
            fail(case, f"eos {info['eos']}, expected <|im_end|> = {cfg['vocab_size'] - 1}")
        if shards > 1 and not os.path.exists(os.path.join(d, "model.safetensors.index.json")):
            fail(case, "fixture did not write an index")


def test_config_variants():
    # head_dim larger than hidden/heads: q/o projections are not square
    cfg = hf.llama_config(head_dim=32)
    d = fresh_dir("llama-head-dim")
    w = hf.write_model_dir(d, cfg, seed=3)
    check_loaded("llama-head-dim", d, cfg, w)

    # llama3 rope scaling; architecture from model_type only
    cfg = hf.llama_config(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 128},
                          rope_theta=500000.0)
    del cfg["architectures"]
    d = fresh_dir("llama3-rope")
    w = hf.write_model_dir(d, cfg, seed=4)
    check_loaded("llama3-rope", d, cfg, w,
                 {"rope_scaling": 2, "rope_factor": 8.0, "rope_low_freq_factor": 1.0,
                  "rope_high_freq_factor": 4.0, "rope_orig_ctx": 128})

    # linear rope scaling written the old way ("type"), no tokenizer_config.json
    cfg = hf.llama_config(rope_scaling={"type": "linear", "factor": 2.0})
    d = fresh_dir("linear-rope")
    w = hf.write_model_dir(d, cfg, seed=5, tokenizer_config=False)
    info = check_loaded("linear-rope", d, cfg, w, {"rope_scaling": 1, "rope_factor": 2.0})
    if info and info["chat_template"] is not None:
        fail("linear-rope", "chat template without tokenizer_config.json")

    # tied, but lm_head.weight written anyway: HF ties it, so it is ignored
    cfg = hf.llama_config(tie_word_embeddings=True)
    d = fresh_dir("tied-with-head")
    w = hf.make_weights(hf.llama_config(), seed=6)
    w = hf.write_model_dir(d, cfg, weights=w)
    check_loaded("tied-with-head", d, cfg, w)

    # mistral's sliding window below max_position_embeddings caps the context
    cfg = hf.mistral_config(sliding_window=128)
    d = fresh_dir("mistral-window")
    w = hf.write_model_dir(d, cfg, seed=7)
    check_loaded("mistral-window", d, cfg, w, {"n_ctx_train": 128})

    # a trailing slash does not change the name
    d = fresh_dir("trailing-slash")
    cfg = hf.llama_config()
    w = hf.write_model_dir(d, cfg, seed=8)
    check_loaded("trailing-slash", d + "/", cfg, w, {"name": "trailing-slash"})


# ------------------------------------------------------------------ errors


def expect_error(case, path, *needles):
    rc, out, err = run_tool(path)
    lines = err.strip().splitlines()
    if rc <= 0:
        fail(case, f"exit code {rc} (expected 1)" + (" — crashed" if rc < 0 else ""))
        return
    if len(lines) != 1:
        fail(case, f"expected one error line, got {lines!r}")
        return
    for n in needles:
        if n not in lines[0]:
            fail(case, f"message {lines[0]!r} lacks {n!r}")
    print(f"ok   {case}: {lines[0]}")


def broken_dir(case, cfg=None, **kw):
    d = fresh_dir(case)
    cfg = cfg or hf.llama_config()
    w = hf.write_model_dir(d, cfg, seed=1, **kw)
    return d, cfg, w


def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    fn(cfg)
    with open(p, "w") as f:
        json.dump(cfg, f)


def test_errors():
    d, _, _ = broken_dir("err-arch")
    edit_config(d, lambda c: c.update(architectures=["GPT2LMHeadModel"], model_type="gpt2"))
    expect_error("unknown architecture", d, os.path.join(d, "config.json"),
                 "architecture 'GPT2LMHeadModel' is not supported", "LlamaForCausalLM")

    d, _, _ = broken_dir("err-model-type")
    edit_config(d, lambda c: (c.pop("architectures"), c.update(model_type="gemma")))
    expect_error("unknown model_type", d, "'gemma' is not supported")

    d, _, _ = broken_dir("err-shard", shards=2)
    os.remove(os.path.join(d, hf.shard_file_name(1, 2)))
    expect_error("missing shard", d, os.path.join(d, hf.shard_file_name(1, 2)), "missing shard",
                 "model.safetensors.index.json")

    cfg = hf.llama_config()
    w = hf.make_weights(cfg, seed=2)
    del w["model.layers.1.mlp.up_proj.weight"]
    d = fresh_dir("err-tensor")
    hf.write_model_dir(d, cfg, weights=w)
    expect_error("missing tensor", d, "'model.layers.1.mlp.up_proj.weight'", "missing")

    w = hf.make_weights(cfg, seed=2)
    del w["lm_head.weight"]
    d = fresh_dir("err-lm-head")
    hf.write_model_dir(d, cfg, weights=w)
    expect_error("untied without lm_head", d, "'lm_head.weight'", "missing")

    w = hf.make_weights(hf.qwen2_config(), seed=2)
    del w["model.layers.0.self_attn.k_proj.bias"]
    d = fresh_dir("err-bias")
    hf.write_model_dir(d, hf.qwen2_config(), weights=w)
    expect_error("qwen2 without bias", d, "'model.layers.0.self_attn.k_proj.bias'")

    w = hf.make_weights(cfg, seed=2)
    k = "model.layers.0.self_attn.k_proj.weight"
    w[k] = np.ascontiguousarray(w[k].T)
    d = fresh_dir("err-shape")
    hf.write_model_dir(d, cfg, weights=w)
    expect_error("wrong tensor shape", d, f"'{k}'", "shape [64, 32], expected [32, 64]")

    w = hf.make_weights(cfg, seed=2)
    w["model.norm.weight"] = w["model.norm.weight"][None, :]
    d = fresh_dir("err-rank")
    hf.write_model_dir(d, cfg, weights=w)
    expect_error("wrong tensor rank", d, "'model.norm.weight'", "expected [64]")

    d, _, _ = broken_dir("err-json")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"architectures": ["LlamaForCausalLM"], "vocab_size": ')
    expect_error("config.json not JSON", d, os.path.join(d, "config.json"), "JSON")

    d, _, _ = broken_dir("err-json-array")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write("[1, 2]")
    expect_error("config.json not an object", d, os.path.join(d, "config.json"), "object")

    d, _, _ = broken_dir("err-field")
    edit_config(d, lambda c: c.pop("hidden_size"))
    expect_error("missing config field", d, os.path.join(d, "config.json"), '"hidden_size"')

    d, _, _ = broken_dir("err-field-type")
    edit_config(d, lambda c: c.update(num_hidden_layers="2"))
    expect_error("config field of wrong type", d, os.path.join(d, "config.json"), '"num_hidden_layers"')

    d, _, _ = broken_dir("err-field-frac")
    edit_config(d, lambda c: c.update(intermediate_size=95.5))
    expect_error("fractional config field", d, '"intermediate_size"')

    d, _, _ = broken_dir("err-tie-type")
    edit_config(d, lambda c: c.update(tie_word_embeddings="yes"))
    expect_error("bool field of wrong type", d, '"tie_word_embeddings"')

    d, _, _ = broken_dir("err-absurd")
    edit_config(d, lambda c: c.update(vocab_size=2**31 - 1))
    expect_error("absurd vocab size", d, os.path.join(d, "config.json"), "n_vocab")

    d, _, _ = broken_dir("err-huge-int")
    edit_config(d, lambda c: c.update(hidden_size=2**40))
    expect_error("hidden size beyond int32", d, '"hidden_size"')

    d, _, _ = broken_dir("err-kv-heads")
    edit_config(d, lambda c: c.update(num_key_value_heads=3))
    expect_error("heads not a multiple of kv heads", d, os.path.join(d, "config.json"))

    d, _, _ = broken_dir("err-rope")
    edit_config(d, lambda c: c.update(rope_scaling={"type": "yarn", "factor": 4.0}))
    expect_error("yarn rope scaling", d, "'yarn'", "not supported")

    d, _, _ = broken_dir("err-rope-dynamic")
    edit_config(d, lambda c: c.update(rope_scaling={"rope_type": "dynamic", "factor": 4.0}))
    expect_error("dynamic rope scaling", d, "'dynamic'")

    d, _, _ = broken_dir("err-rope-factor")
    edit_config(d, lambda c: c.update(rope_scaling={"type": "linear"}))
    expect_error("linear rope without factor", d, '"factor"')

    d, _, _ = broken_dir("err-quant")
    edit_config(d, lambda c: c.update(quantization_config={"quant_method": "gptq"}))
    expect_error("pre-quantized checkpoint", d, "quantization_config")

    d, _, _ = broken_dir("err-tokenizer")
    os.remove(os.path.join(d, "tokenizer.json"))
    expect_error("missing tokenizer.json", d, "tokenizer.json")

    d, _, _ = broken_dir("err-no-weights")
    os.remove(os.path.join(d, "model.safetensors"))
    expect_error("no safetensors files", d, d, "model.safetensors")

    d, _, _ = broken_dir("err-truncated")
    p = os.path.join(d, "model.safetensors")
    with open(p, "rb") as f:
        data = f.read()
    with open(p, "wb") as f:
        f.write(data[: len(data) - 100])
    expect_error("truncated safetensors", d, p)

    d, _, _ = broken_dir("err-dtype")
    p = os.path.join(d, "model.safetensors")
    with open(p, "rb") as f:
        data = bytearray(f.read())
    # F32 -> I32 keeps every size check valid; only conversion must refuse it
    at = data.index(b'"dtype":"F32"')
    data[at + 9: at + 12] = b"I32"
    with open(p, "wb") as f:
        f.write(data)
    expect_error("unsupported dtype", d, p, "I32")

    d, _, _ = broken_dir("err-vocab")
    edit_config(d, lambda c: c.update(vocab_size=300))
    expect_error("tokenizer larger than vocab_size", d, "tokenizer.json", "300")

    missing = os.path.join(OUT, "does-not-exist")
    expect_error("nonexistent path", missing, missing)

    d = fresh_dir("err-empty-dir")
    os.makedirs(d)
    expect_error("empty directory", d, d, "config.json")


def main():
    if not os.access(TOOL, os.X_OK):
        print(f"tool not found: {TOOL}")
        return 1
    os.makedirs(OUT, exist_ok=True)
    test_fixture_writer()
    test_good_models()
    test_config_variants()
    test_errors()
    if failures:
        print(f"\n{len(failures)} failure(s)")
        return 1
    print("all hf import checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
