"""The fused calibration pass against the numpy reference.

For tiny synthetic GGUF models (llama with GQA; tied MQA; an odd n_embd with
head_dim * n_head != n_embd; qwen2 with q/k/v biases; Q8_0 weights) the C
pass (tests/tool_calib_dump.c, tlm_calibrate) is compared with
ref_llama.calibration_stats, a plain float64 forward over the same sequences:
  - every importance score (attention, MLP, block): absolute error < 1e-5;
  - every per-channel mean of x^2 (inputs of Wqkv, Wo, Wgate/up, Wdown and
    the output head): relative error < 1e-4 of the largest value of its vector;
  - the same scores at 1 and 2 threads (within 1e-6);
  - a sublayer removed from the model: NaN score, no statistics, and the
    others as the reference computes them without it;
  - sequences: seq_len tokens each, the last one shorter, one of a single
    token not run.

    python test_calib_ref.py TOOL_CALIB_DUMP
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import ref_llama
import synth_gguf
from testutil import scratch_dir

SCORE_TOL = 1e-5
STAT_TOL = 1e-4
THREAD_TOL = 1e-6

WORDS = ("the of and to in is was for on that with as by at from his an were are which "
         "this be has had it first one their its new after who they have her she two been "
         "other when there all during into school time may years more most only over city "
         "some world would where later up such used many can state about national out known "
         "university united then made").split()


def make_text(path, n_words, seed):
    rng = np.random.default_rng(seed)
    lines, line = [], []
    for i in range(n_words):
        line.append(WORDS[int(rng.integers(len(WORDS)))])
        if len(line) >= 12 or rng.random() < 0.05:
            lines.append(" ".join(line) + " .")
            line = []
    lines.append(" ".join(line))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_tool(tool, model, text, n_tokens, seq, threads, extra=()):
    out = os.path.join(os.path.dirname(text), "calib.json")
    cmd = [tool, model, "--calib", text, "--tokens", str(n_tokens), "--seq", str(seq),
           "-t", str(threads), *extra, out]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    with open(out) as f:
        return json.load(f)


def as_array(v):
    return np.array([np.nan if a is None else a for a in v], dtype=np.float64)


def compare(label, got, want, failures):
    worst_score, worst_stat = 0.0, 0.0
    for kind in ("attn", "mlp", "block"):
        g, w = as_array(got[kind]), np.asarray(want[kind], dtype=np.float64)
        if not np.array_equal(np.isnan(g), np.isnan(w)):
            failures.append(f"{label}: {kind} NaN pattern {g} vs reference {w}")
            continue
        m = ~np.isnan(w)
        if m.any():
            e = float(np.abs(g[m] - w[m]).max())
            worst_score = max(worst_score, e)
            if e > SCORE_TOL:
                failures.append(f"{label}: {kind} scores {g} vs reference {w} (err {e:.2e})")
    for key in ("qkv", "attn_out", "ffn", "down"):
        for li, (g, w) in enumerate(zip(got[key], want[key])):
            if (g is None) != (w is None):
                failures.append(f"{label}: {key}[{li}] present {g is not None}, reference {w is not None}")
                continue
            if g is None:
                continue
            g = np.asarray(g)
            if g.shape != w.shape:
                failures.append(f"{label}: {key}[{li}] has {g.shape} channels, reference {w.shape}")
                continue
            e = float(np.abs(g - w).max() / np.abs(w).max())
            worst_stat = max(worst_stat, e)
            if e > STAT_TOL:
                failures.append(f"{label}: {key}[{li}] rel err {e:.2e}")
    g, w = np.asarray(got["output"]), want["output"]
    e = float(np.abs(g - w).max() / np.abs(w).max())
    worst_stat = max(worst_stat, e)
    if e > STAT_TOL:
        failures.append(f"{label}: output stats rel err {e:.2e}")
    if got["n_tokens"] != want["n_tokens"]:
        failures.append(f"{label}: ran {got['n_tokens']} tokens, reference {want['n_tokens']}")
    print(f"{label:50s} scores max abs err {worst_score:.2e}, stats max rel err {worst_stat:.2e}")


def main():
    tool = sys.argv[1]
    out = scratch_dir("calib_ref")
    text = os.path.join(out, "calib.txt")
    make_text(text, 400, seed=11)

    models = []
    p = os.path.join(out, "llama_gqa.gguf")
    synth_gguf.write_gguf(p, arch="llama", n_layer=3, tied=False, seed=21)
    models.append(("llama GQA 4/2 heads", p))
    p = os.path.join(out, "llama_mqa_tied.gguf")
    synth_gguf.write_gguf(p, arch="llama", n_layer=2, n_head=4, n_head_kv=1, tied=True, seed=22)
    models.append(("llama MQA tied", p))
    p = os.path.join(out, "llama_odd.gguf")
    synth_gguf.write_gguf(p, arch="llama", n_layer=2, n_embd=51, n_head=3, n_head_kv=1,
                          head_dim=16, n_ff=77, seed=23)
    models.append(("llama n_embd 51, 3x16 heads, n_ff 77", p))
    p = os.path.join(out, "qwen2.gguf")
    synth_gguf.write_gguf(p, arch="qwen2", n_layer=2, tied=True, rope_theta=1e6, seed=24)
    models.append(("qwen2 (biases)", p))
    p = os.path.join(out, "llama_q8.gguf")
    synth_gguf.write_gguf(p, arch="llama", n_layer=2, qtype="q8_0", seed=25)
    models.append(("llama q8_0", p))

    failures = []
    # (n_tokens, seq_len): 100 = 6 x 16 + 4 (a short last sequence);
    # 97 = 6 x 16 + 1 (the single-token remainder is not run)
    for name, path in models:
        model = ref_llama.load(path)
        for n_tokens, seq in ((100, 16), (97, 16)):
            got = run_tool(tool, path, text, n_tokens, seq, 2)
            bos = got["bos"] if got["adds_bos"] else None
            seqs = ref_llama.calibration_sequences(got["text_tokens"], n_tokens, seq, bos)
            want = ref_llama.calibration_stats(model, seqs)
            compare(f"{name}, {n_tokens} tokens / {seq}", got, want, failures)
        one = run_tool(tool, path, text, 100, 16, 1)
        two = run_tool(tool, path, text, 100, 16, 2)
        d = max(float(np.nanmax(np.abs(as_array(one[k]) - as_array(two[k]))))
                for k in ("attn", "mlp", "block"))
        print(f"{name:50s} 1 vs 2 threads: max score difference {d:.2e}")
        if d > THREAD_TOL:
            failures.append(f"{name}: scores differ by {d:.2e} between 1 and 2 threads")

    # a removed sublayer: NaN and no statistics for it, the rest as without it
    path = models[0][1]
    model = ref_llama.load(path)
    for flag, drop_attn, drop_mlp in (("--drop-attn", (1,), ()), ("--drop-mlp", (), (2,))):
        layer = (drop_attn or drop_mlp)[0]
        got = run_tool(tool, path, text, 64, 32, 2, (flag, str(layer)))
        seqs = ref_llama.calibration_sequences(got["text_tokens"], 64, 32)
        want = ref_llama.calibration_stats(model, seqs, drop_attn, drop_mlp)
        compare(f"llama GQA without {'attention' if drop_attn else 'MLP'} {layer}", got, want,
                failures)

    # progress: stage "calibrate", done grows to total = tokens x layers;
    # cancelling fails cleanly
    got = run_tool(tool, path, text, 100, 16, 2)
    pr = got["progress"]
    ok = (pr["stage_ok"] and pr["monotonic"] and pr["done"] == pr["total"] == 100 * 3
          and pr["calls"] >= 3)
    print(f"progress: {pr}")
    if not ok:
        failures.append(f"progress reports {pr}")
    r = subprocess.run([tool, path, "--calib", text, "--tokens", "100", "--seq", "16",
                        "--cancel-at", "2", os.path.join(out, "cancel.json")],
                       stderr=subprocess.PIPE, text=True)
    if r.returncode == 0 or "cancelled" not in r.stderr:
        failures.append(f"cancel: rc {r.returncode}, {r.stderr.strip()}")

    # the built-in text: runs without a file, names itself
    r = subprocess.run([tool, path, "--tokens", "64", "--seq", "32",
                        os.path.join(out, "builtin.json")], stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        failures.append(f"built-in text: {r.stderr.strip()}")
    else:
        with open(os.path.join(out, "builtin.json")) as f:
            b = json.load(f)
        if b["text_name"] != "built-in" or b["n_tokens"] != 64:
            failures.append(f"built-in text: name {b['text_name']!r}, {b['n_tokens']} tokens")

    if failures:
        print("\n".join(["FAILURES:"] + failures))
        sys.exit(1)
    print("all calibration comparisons passed")


if __name__ == "__main__":
    main()
