"""Greedy continuations of the real default model (SmolLM2-135M-Instruct,
Q4_1/Q8_0 GGUF) from the C runtime against the numpy reference running on the
same weights dequantized by the gguf package.

For each of three fixed prompts (ChatML-wrapped questions and a plain
sentence, tokenized once with a Hugging Face BPE built from the GGUF's own
vocabulary and merges), 32 greedy tokens must be identical. Should the two
ever diverge where the reference's top-2 logits are within NEAR_TIE of each
other, the sequences are compared only up to that position (a tie is not a
bug); any other divergence fails. The last prompt token's logits must also
agree within LOGIT_TOL (max |c - ref| / max |ref|).

The model is found at $TLM_MODEL_PATH, else
${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models/SmolLM2-135M-Instruct.Q4_1.gguf.

    python test_realmodel_greedy.py TOOL_LOGITS
"""

import os
import subprocess
import sys
import time

# The reference runs on the f32 widening of the GGUF's weights, and so does
# trimlm here; the default in-place load is checked by test_gguf_inplace.py.
os.environ["TRIMLM_GGUF_F32"] = "1"

# numpy's BLAS: one thread. The reference is small enough, and a second BLAS
# thread on a machine whose cores are busy with other tests costs 3x.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import ref_llama
from testutil import real_model_path, scratch_dir

N_GEN = 32
NEAR_TIE = 1e-3
LOGIT_TOL = 1e-4

SYSTEM = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
          407, 19712, 8182, 2, 198]
ASSISTANT = [2, 198, 1, 520, 9531, 198]
PROMPTS = {
    "What is the capital of France?":
        SYSTEM + [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47] + ASSISTANT,
    "Write a haiku about the sea.":
        SYSTEM + [1, 4093, 198, 19161, 253, 421, 30614, 563, 260, 3426, 30] + ASSISTANT,
    "The quick brown fox ... Once upon a time":
        [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 4027, 1980, 253, 655],
}


def main():
    tool = sys.argv[1]
    path = real_model_path()
    if not os.path.exists(path):
        print(f"model not found: {path}")
        sys.exit(1)
    out = scratch_dir("realmodel_greedy")

    t0 = time.time()
    model = ref_llama.load(path, np.float32)
    print(f"reference loaded in {time.time() - t0:.1f} s")
    failures = []
    for name, prompt in PROMPTS.items():
        tok_arg = ",".join(map(str, prompt))
        t0 = time.time()
        want, gaps, want_last = ref_llama.greedy(model, prompt, N_GEN)
        t_ref = time.time() - t0

        lf = os.path.join(out, "last.f32")
        gf = os.path.join(out, "gen.txt")
        t0 = time.time()
        r1 = subprocess.run([tool, path, "--tokens", tok_arg, "--mode", "prefill", "-t", "2", lf],
                            stderr=subprocess.PIPE, text=True)
        # One thread for the token-by-token part: a second thread only helps
        # on an idle machine, and test runs share the cores.
        r2 = subprocess.run([tool, path, "--tokens", tok_arg, "--generate", str(N_GEN), "-t", "1",
                             gf], stderr=subprocess.PIPE, text=True)
        t_c = time.time() - t0
        if r1.returncode or r2.returncode:
            failures.append(f"{name}: tool failed: {r1.stderr.strip()} {r2.stderr.strip()}")
            continue
        got_last = np.fromfile(lf, dtype=np.float32).reshape(len(prompt), -1)[-1]
        err = float(np.abs(got_last - want_last).max() / np.abs(want_last).max())
        with open(gf) as f:
            got = [int(t) for t in f.read().strip().split(",")]

        agree = 0
        while agree < N_GEN and got[agree] == want[agree]:
            agree += 1
        verdict = "ok"
        if agree < N_GEN:
            if gaps[agree] < NEAR_TIE:
                verdict = f"ok (near tie at {agree}: top-2 gap {gaps[agree]:.2e})"
            else:
                verdict = "FAIL"
                failures.append(f"{name}: diverged at {agree} (gap {gaps[agree]:.3g}):"
                                f" got {got} want {want}")
        if err >= LOGIT_TOL:
            verdict = "FAIL"
            failures.append(f"{name}: last-token logits differ, max rel err {err:.2e}")
        print(f"{verdict:4s} {name!r}: {agree}/{N_GEN} tokens equal, min top-2 gap "
              f"{min(gaps):.3g}, prompt logits rel err {err:.2e} (ref {t_ref:.1f} s, C {t_c:.1f} s)")
        print(f"     tokens: {got}")

    if failures:
        print("\n".join(["FAILURES:"] + failures))
        sys.exit(1)
    print("greedy continuations match the reference")


if __name__ == "__main__":
    main()
