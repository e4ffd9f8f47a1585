"""The runtime's logits on tiny synthetic models against the numpy reference.

Models: GGUF llama (untied; tied + linear RoPE scaling; Q8_0 weights), GGUF
qwen2 (q/k/v biases, rotate-half RoPE), HF llama (f32; bf16 with llama3 RoPE
scaling, 2 shards), HF qwen2, and a GGUF converted from the HF llama weights
(Q/K permuted as llama.cpp does). For each: the C runtime through
tests/tool_logits.c (public API only) in prefill, token-by-token decode and
mixed modes, 1 and 2 threads, with n_batch smaller than the input, and with
the scalar kernels forced (TRIMLM_ISA=scalar).

Error measure: max |c - ref| over every compared logit, divided by max |ref|
over the whole logits array of that model; must stay below 1e-4 (the float64
reference against f32 arithmetic: expect ~1e-6).

    python test_forward_ref.py TOOL_LOGITS
"""

import os
import subprocess
import sys
import time

# The numpy reference is the f32 forward pass on the weights widened to f32;
# trimlm loads GGUF files so here (the in-place load, whose int8 activations
# move logits by ~1e-2, is checked by test_gguf_inplace.py).
os.environ["TRIMLM_GGUF_F32"] = "1"

# numpy's BLAS: one thread. The reference is small enough, and a second BLAS
# thread on a machine whose cores are busy with other tests costs 3x.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import hf_fixtures as hf
import ref_llama
import synth_gguf
from testutil import logits_rows_kept, logits_rows_problem, scratch_dir

TOL = 1e-4
TOKENS = [5, 300, 17, 64, 299, 1, 250, 42, 42, 42, 100, 7, 200, 3, 260, 311, 0, 128, 9, 77,
          150, 12, 33, 285, 65, 66, 67, 101, 102, 103, 104]


def run(cmd, isa=None):
    env = dict(os.environ)
    if isa:
        env["TRIMLM_ISA"] = isa
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=120)


def rel_err(got, want, mode):
    """(max |got - want| / max |want| over the rows the mode keeps, the number
    of those rows, what is wrong with the NaN rows or None)."""
    kept = np.array(logits_rows_kept(mode, len(got)))
    scale = np.abs(want).max()
    return (float(np.abs(got[kept] - want[kept]).max() / scale), int(kept.sum()),
            logits_rows_problem(got, mode))


def main():
    tool = sys.argv[1]
    out = scratch_dir("forward_ref")

    # ---------------------------------------------------------------- models
    models = []  # (name, path, expected rows kept in mixed mode)
    p = os.path.join(out, "llama.gguf")
    synth_gguf.write_gguf(p, arch="llama", tied=False, seed=1)
    models.append(("gguf llama", p))
    p = os.path.join(out, "llama_tied_linear.gguf")
    synth_gguf.write_gguf(p, arch="llama", tied=True, rope_scaling=("linear", 2.0), seed=2,
                          n_head=4, n_head_kv=1)
    models.append(("gguf llama tied, linear rope x2, MQA", p))
    p = os.path.join(out, "llama_q8.gguf")
    synth_gguf.write_gguf(p, arch="llama", tied=False, seed=3, qtype="q8_0")
    models.append(("gguf llama q8_0", p))
    p = os.path.join(out, "qwen2.gguf")
    synth_gguf.write_gguf(p, arch="qwen2", tied=True, rope_theta=1e6, seed=4)
    models.append(("gguf qwen2", p))

    cfg = hf.llama_config(vocab_size=320)
    d = os.path.join(out, "hf_llama")
    hf_w = hf.write_model_dir(d, cfg, seed=5)
    models.append(("hf llama", d))
    p = os.path.join(out, "llama_from_hf.gguf")
    synth_gguf.write_gguf_from_hf(p, hf_w, cfg)
    models.append(("gguf from hf llama", p))
    d3 = os.path.join(out, "hf_llama3")
    hf.write_model_dir(d3, hf.llama_config(
        vocab_size=320, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        seed=6, dtype="bf16", shards=2)
    models.append(("hf llama bf16, llama3 rope, 2 shards", d3))
    dq = os.path.join(out, "hf_qwen2")
    hf.write_model_dir(dq, hf.qwen2_config(vocab_size=320), seed=7)
    models.append(("hf qwen2", dq))

    # The reference's two RoPE conventions must agree on the same weights.
    a = ref_llama.load(d).session().forward(TOKENS)
    b = ref_llama.load(os.path.join(out, "llama_from_hf.gguf")).session().forward(TOKENS)
    e = float(np.abs(a - b).max() / np.abs(a).max())
    print(f"reference: HF (rotate-half) vs permuted GGUF (adjacent pairs): {e:.2e}")
    assert e < 1e-6, "reference self-check failed"
    # ... and incremental decoding must equal one prefill.
    s = ref_llama.load(d).session()
    c = np.concatenate([s.forward(TOKENS[:7]), s.forward(TOKENS[7:8]), s.forward(TOKENS[8:])])
    assert float(np.abs(a - c).max() / np.abs(a).max()) < 1e-9, "reference KV cache self-check failed"

    # ------------------------------------------------------------ comparisons
    failures = []
    # (mode, threads, n_batch (0: default), forced kernel set)
    runs = [("prefill", 1, 0, None), ("prefill", 2, 0, None), ("decode", 1, 0, None),
            ("decode", 2, 0, None), ("mixed", 1, 0, None), ("mixed", 2, 0, None),
            ("prefill", 2, 4, None), ("mixed", 1, 5, None), ("mixed", 2, 0, "scalar")]
    tok_arg = ",".join(map(str, TOKENS))
    for name, path in models:
        want = ref_llama.load(path).session().forward(TOKENS)
        for mode, threads, batch, isa in runs:
            of = os.path.join(out, "logits.f32")
            cmd = [tool, path, "--tokens", tok_arg, "--mode", mode, "-t", str(threads), of]
            if batch:
                cmd[-1:-1] = ["-b", str(batch)]
            r = run(cmd, isa)
            label = f"{name:40s} {mode:7s} t={threads} b={batch or 'default'} isa={isa or 'best'}"
            if r.returncode != 0:
                failures.append(f"{label}: tool failed: {r.stderr.strip()}")
                print(f"FAIL {label}: {r.stderr.strip()}")
                continue
            got = np.fromfile(of, dtype=np.float32).reshape(len(TOKENS), -1)
            err, rows, problem = rel_err(got, want, mode)
            ok = err < TOL and problem is None
            print(f"{'ok  ' if ok else 'FAIL'} {label}: max rel err {err:.2e} over {rows} rows"
                  + (f"; {problem}" if problem else ""))
            if not ok:
                failures.append(f"{label}: err {err:.2e} {problem or ''}")

    # ------------------------------------------------------------ bad input
    gg = os.path.join(out, "llama.gguf")
    of = os.path.join(out, "bad.f32")
    r = run([tool, gg, "--tokens", tok_arg, "-c", "8", of])
    if r.returncode == 0 or "do not fit" not in r.stderr:
        failures.append(f"context overflow not reported: rc {r.returncode}, {r.stderr.strip()}")
    r = run([tool, gg, "--tokens", "1,2,320", of])
    if r.returncode == 0 or "320" not in r.stderr:
        failures.append(f"out-of-vocabulary token not reported: rc {r.returncode}, {r.stderr.strip()}")
    print("bad-input checks done")

    if failures:
        print("\n".join(["FAILURES:"] + failures))
        sys.exit(1)
    print("all forward comparisons passed")


if __name__ == "__main__":
    main()
