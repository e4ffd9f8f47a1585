"""Greedy continuations of the real Gemma 3 270M GGUF (Q4_K_M) from the C
runtime against the numpy Gemma 3 reference (tests/py/ref_gemma3.py) on the
same weights dequantized by the gguf package, in float32.

Three prompts (a plain sentence, and two questions in Gemma's chat turns
<start_of_turn>user ... <end_of_turn>\\n<start_of_turn>model\\n), tokenized by
the runtime's tokenizer (the input of both sides; the tokenizer has its own
test). 16 greedy tokens must be identical, unless the two diverge where the
reference's top-2 logits are within NEAR_TIE; the last prompt token's logits
must agree within LOGIT_TOL (max |c - ref| / max |ref|).

The model is found at $TLM_GEMMA3_PATH, else in trimlm's model cache as
gemma-3-270m-q4_k_m.gguf (`trimlm pull gemma-3-270m`, which ctest's
pull_gemma3 runs first); without it the test fails.

    python test_gemma3_real.py TOOL_LOGITS TOOL_TOKENIZE
"""

import os
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import ref_gemma3
from testutil import scratch_dir

# The reference runs on the f32 widening of the GGUF's weights, and so does
# trimlm here (the in-place int8-activation path is checked on the default
# model by test_gguf_inplace.py).
os.environ["TRIMLM_GGUF_F32"] = "1"

N_GEN = 16
NEAR_TIE = 1e-3
LOGIT_TOL = 1e-4
PROMPTS = [
    "The capital of France is",
    "<start_of_turn>user\nWhat is the largest planet in the solar system?<end_of_turn>\n"
    "<start_of_turn>model\n",
    "<start_of_turn>user\nWrite one sentence about the sea.<end_of_turn>\n<start_of_turn>model\n",
]


def model_path():
    if os.environ.get("TLM_GEMMA3_PATH"):
        return os.environ["TLM_GEMMA3_PATH"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "trimlm", "models", "gemma-3-270m-q4_k_m.gguf")


def main():
    tool, tool_tok = sys.argv[1], sys.argv[2]
    path = model_path()
    if not os.path.exists(path):
        print(f"FAIL: Gemma 3 model not found: {path} (trimlm pull gemma-3-270m)")
        sys.exit(1)
    out = scratch_dir("gemma3_real")
    corpus = os.path.join(out, "prompts.txt")
    with open(corpus, "w") as f:
        for p in PROMPTS:
            f.write(p.replace("\\", "\\\\").replace("\n", "\\n") + "\n")
    r = subprocess.run([tool_tok, "--gguf", path, "--special", "--bos", corpus],
                       capture_output=True, text=True, check=True)
    prompts = [[int(t) for t in line.split()] for line in r.stdout.strip().split("\n")]
    assert len(prompts) == len(PROMPTS) and all(p[0] == 2 for p in prompts), prompts
    # the chat markers are single tokens (105 <start_of_turn>, 106 <end_of_turn>)
    assert 105 in prompts[1] and 106 in prompts[1], prompts[1]

    t0 = time.time()
    model = ref_gemma3.load_gguf(path, np.float32)
    print(f"reference loaded in {time.time() - t0:.1f} s")
    failures = []
    for text, prompt in zip(PROMPTS, prompts):
        name = text.replace("\n", " ")[:50]
        s = ref_gemma3.Session(model)
        want_last = s.forward(prompt)[-1]
        want, gaps, logits = [], [], want_last
        for i in range(N_GEN):
            top2 = np.sort(logits)[-2:]
            gaps.append(float(top2[1] - top2[0]))
            want.append(int(np.argmax(logits)))
            if i + 1 < N_GEN:
                logits = s.forward([want[-1]])[-1]
        tok_arg = ",".join(map(str, prompt))
        lf, gf = os.path.join(out, "last.f32"), os.path.join(out, "gen.txt")
        r1 = subprocess.run([tool, path, "--tokens", tok_arg, "--mode", "prefill", "-t", "2", lf],
                            stderr=subprocess.PIPE, text=True)
        r2 = subprocess.run([tool, path, "--tokens", tok_arg, "--generate", str(N_GEN), "-t", "1",
                             gf], stderr=subprocess.PIPE, text=True)
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
                verdict = f"ok (near tie at {agree})"
            else:
                verdict = "FAIL"
                failures.append(f"{name}: diverged at {agree}: got {got} want {want}")
        if err >= LOGIT_TOL:
            verdict = "FAIL"
            failures.append(f"{name}: last-token logits differ, max rel err {err:.2e}")
        print(f"{verdict} {name!r}: {agree}/{N_GEN} tokens equal, min top-2 gap {min(gaps):.3g}, "
              f"prompt logits rel err {err:.2e}")
        print(f"     prompt {prompt}\n     tokens {got}")
    if failures:
        print("\n".join(["FAILURES:"] + failures))
        sys.exit(1)
    print("gemma3 greedy continuations match the reference")


if __name__ == "__main__":
    main()
