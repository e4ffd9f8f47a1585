"""Gemma 3 logits of the runtime against the independent numpy reference
(tests/py/ref_gemma3.py) on synthetic GGUF models: with and without final
soft-capping, a sliding window shorter than the input (so local layers see
only part of it), grouped-query attention and head_dim != n_embd / n_head,
a pattern of 3 (layers 2 and 5 global) and Gemma 3's own 6. Each model runs
through tests/tool_logits.c in prefill, token-by-token decode and mixed
modes, 1 and 2 threads, a batch smaller than the input, and the scalar
kernels. Error: max |c - ref| / max |ref| below 1e-4 (float64 reference
against f32 arithmetic).

Also: with the local base equal to the global one and a window longer than
the input, every layer is a plain causal layer, so the windowed model must
differ from it (the window and the local base are not ignored).

    python test_gemma3_ref.py TOOL_LOGITS
"""

import os
import subprocess
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import ref_gemma3
import synth_gguf
from testutil import logits_rows_kept, logits_rows_problem, scratch_dir

TOL = 1e-4
TOKENS = [5, 300, 17, 64, 299, 1, 250, 42, 42, 42, 100, 7, 200, 3, 260, 311, 0, 128, 9, 77]


def run_tool(tool, path, mode, threads, batch, isa, of):
    cmd = [tool, path, "--tokens", ",".join(map(str, TOKENS)), "--mode", mode, "-t", str(threads)]
    if batch:
        cmd += ["-b", str(batch)]
    env = dict(os.environ)
    if isa:
        env["TRIMLM_ISA"] = isa
    r = subprocess.run(cmd + [of], capture_output=True, text=True, env=env, timeout=120)
    return r


def main():
    tool = sys.argv[1]
    out = scratch_dir("gemma3_ref")
    models = []
    p = os.path.join(out, "g3_window5.gguf")
    synth_gguf.write_gemma3_gguf(p, window=5, pattern=3, seed=11)
    models.append(("gemma3 window 5, pattern 3, GQA 4/2", p))
    p = os.path.join(out, "g3_softcap.gguf")
    synth_gguf.write_gemma3_gguf(p, window=3, pattern=3, softcap=2.0, n_head_kv=1, seed=12)
    models.append(("gemma3 soft-cap 2, window 3, MQA", p))
    p = os.path.join(out, "g3_pattern6.gguf")
    synth_gguf.write_gemma3_gguf(p, n_layer=7, window=4, pattern=6, seed=13, theta_local=500.0)
    models.append(("gemma3 pattern 6 (default), local base 500", p))

    failures = []
    # the window must matter: same weights, window longer than the input
    p_full = os.path.join(out, "g3_nowindow.gguf")
    synth_gguf.write_gemma3_gguf(p_full, window=1000, pattern=3, seed=11)
    a = ref_gemma3.Session(ref_gemma3.load_gguf(models[0][1])).forward(TOKENS)
    b = ref_gemma3.Session(ref_gemma3.load_gguf(p_full)).forward(TOKENS)
    d = float(np.abs(a - b).max() / np.abs(a).max())
    print(f"reference: window 5 vs no window differ by {d:.2e}")
    if d < 1e-2:
        failures.append("the window does not change the reference's logits")
    # the soft-cap bounds the logits
    capped = ref_gemma3.Session(ref_gemma3.load_gguf(models[1][1])).forward(TOKENS)
    assert np.abs(capped).max() < 2.0

    runs = [("prefill", 1, 0, None), ("prefill", 2, 0, None), ("decode", 1, 0, None),
            ("decode", 2, 0, None), ("mixed", 2, 0, None), ("prefill", 2, 4, None),
            ("mixed", 1, 3, None), ("mixed", 2, 0, "scalar")]
    for name, path in models + [("gemma3 no window", p_full)]:
        want = ref_gemma3.Session(ref_gemma3.load_gguf(path)).forward(TOKENS)
        for mode, threads, batch, isa in runs:
            of = os.path.join(out, "logits.f32")
            r = run_tool(tool, path, mode, threads, batch, isa, of)
            label = f"{name:45s} {mode:7s} t={threads} b={batch or 'default'} isa={isa or 'best'}"
            if r.returncode != 0:
                failures.append(f"{label}: tool failed: {r.stderr.strip()}")
                print(f"FAIL {label}: {r.stderr.strip()}")
                continue
            got = np.fromfile(of, dtype=np.float32).reshape(len(TOKENS), -1)
            kept = np.array(logits_rows_kept(mode, len(got)))
            err = float(np.abs(got[kept] - want[kept]).max() / np.abs(want).max())
            problem = logits_rows_problem(got, mode)
            ok = err < TOL and problem is None
            print(f"{'ok  ' if ok else 'FAIL'} {label}: max rel err {err:.2e}"
                  + (f"; {problem}" if problem else ""))
            if not ok:
                failures.append(f"{label}: err {err:.2e} {problem or ''}")
    # info and score say which attention is global: pattern 3 -> layers 2 and 5
    trimlm = os.environ["TRIMLM"]
    r = subprocess.run([trimlm, "info", models[0][1], "--json"], capture_output=True, text=True)
    import json
    graph = json.loads(r.stdout)["graph"] if r.returncode == 0 else []
    windows = [e["window"] for e in graph if e["kind"] == "attn"]
    print(f"info: attention windows {windows}")
    if windows != [5, 5, 0, 5, 5, 0]:
        failures.append(f"info --json windows {windows} ({r.stderr.strip()})")
    r = subprocess.run([trimlm, "score", models[0][1], "--calib-tokens", "64", "--calib-seq", "32",
                        "-t", "1"], capture_output=True, text=True)
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.strip()[:1].isdigit()]
    spans = [" ".join(row[5:]) for row in rows]
    print(f"score: attention column {spans}")
    if spans != ["local 5", "local 5", "global", "local 5", "local 5", "global"]:
        failures.append(f"score table attention column {spans} ({r.stderr.strip()})")

    # convert refuses the architecture it cannot write, and leaves no file
    for dst in ("g3.tlm", "g3.gguf"):
        dst = os.path.join(out, dst)
        if os.path.exists(dst):
            os.remove(dst)
        r = subprocess.run([trimlm, "convert", models[0][1], "-o", dst, "--type", "f32",
                            "--no-calib"], capture_output=True, text=True)
        print(f"convert -> {os.path.basename(dst)}: rc {r.returncode}: {r.stderr.strip()}")
        if r.returncode == 0 or "gemma3" not in r.stderr or os.path.exists(dst):
            failures.append(f"convert of gemma3 to {dst} not refused cleanly: rc {r.returncode}")

    if failures:
        print("\n".join(["FAILURES:"] + failures))
        sys.exit(1)
    print("all gemma3 comparisons passed")


if __name__ == "__main__":
    main()
