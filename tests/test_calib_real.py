"""`trimlm score` on the default real model (SmolLM2-135M-Instruct):
512 tokens of the built-in calibration text in two sequences of 256, JSON
and the SVG plot.

  - 30 layers x (attn, mlp, block), layer-major, each score equal to the
    float64 numpy reference's (tests/py/ref_llama.py calibration_stats:
    a plain forward over the same sequences, tokens from the `tokenizers`
    reference of tests/py/smollm2_tokenizer.py) within SCORE_TOL;
  - the plot parses as SVG (xml.etree) with the model's name in its title.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from testutil import real_model_path, scratch_dir

TRIMLM = os.environ["TRIMLM"]
N_LAYER = 30
N_TOKENS, SEQ_LEN = 512, 256
# The built-in calibration text (data/calib/embed.cmake compiles it in).
CALIB_TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "calib",
                          "wikitext2-valid-excerpt.txt")
# trimlm (f32, the model's Q4_1 weights dequantized) against float64 on the
# same weights: measured at most 6.3e-8 absolute over the 90 scores (the
# smallest is 4.8e-3). 1e-6 leaves a 16x margin for other kernel sets'
# summation orders, while one token less (511 instead of 512) moves the
# scores by up to 2.7e-4 and one sequence of 512 instead of two of 256 by
# 9.4e-3.
SCORE_TOL = 1e-6


def reference_scores():
    """{(layer, kind): score} of the numpy model on the calibration pass's
    sequences: the text's first tokens (no BOS: SmolLM2 adds none), cut into
    sequences of SEQ_LEN tokens each starting at position 0."""
    import ref_llama
    from smollm2_tokenizer import smollm2_reference
    from gguf import GGUFReader

    path = real_model_path()
    r = GGUFReader(path)
    add = r.fields.get("tokenizer.ggml.add_bos_token")
    bos = int(r.fields["tokenizer.ggml.bos_token_id"].contents()) if add and add.contents() else None
    tok, _ = smollm2_reference(path)
    with open(CALIB_TEXT, "rb") as f:
        head = f.read(16384)
    head = head[:head.rindex(b"\n") + 1].decode("utf-8")   # tokens before a newline do not change
    text_tokens = tok.encode(head, add_special_tokens=False).ids
    seqs = ref_llama.calibration_sequences(text_tokens, N_TOKENS, SEQ_LEN, bos)
    want = ref_llama.calibration_stats(ref_llama.load(path, np.float64), seqs)
    return {(l, k): float(want[k][l]) for l in range(N_LAYER) for k in ("attn", "mlp", "block")}


def main():
    out = scratch_dir("calib_real")
    svg = os.path.join(out, "smollm2-scores.svg")
    if os.path.exists(svg):
        os.remove(svg)
    r = subprocess.run([TRIMLM, "score", "-m", "smollm2-135m-instruct", "--calib-tokens", str(N_TOKENS),
                        "--calib-seq", str(SEQ_LEN), "--format", "json", "--plot", svg],
                       stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=580)
    failures = []
    if r.returncode != 0:
        print(r.stderr)
        sys.exit(1)
    print(r.stderr.strip())
    data = json.loads(r.stdout)
    if len(data) != 3 * N_LAYER:
        failures.append(f"{len(data)} entries, want {3 * N_LAYER}")
    want = [(l, k) for l in range(N_LAYER) for k in ("attn", "mlp", "block")]
    if [(e["layer"], e["kind"]) for e in data] != want:
        failures.append("entries are not layer-major attn, mlp, block")
    want = reference_scores()
    errs = [abs(e["score"] - want[e["layer"], e["kind"]]) if isinstance(e["score"], (int, float))
            else float("inf") for e in data if (e["layer"], e["kind"]) in want]
    worst = max(errs) if errs else float("inf")
    print(f"scores vs numpy (float64): largest absolute difference {worst:.2e} (tolerance {SCORE_TOL:.0e})")
    bad = [(e, want.get((e["layer"], e["kind"]))) for e, d in zip(data, errs) if not d <= SCORE_TOL]
    if bad or not errs:
        failures.append(f"scores differ from numpy's by more than {SCORE_TOL:.0e}: {bad[:5]}")
    attn = sorted((e["score"], e["layer"]) for e in data if e["kind"] == "attn")
    print("lowest attention scores:", ", ".join(f"layer {l}: {s:.4f}" for s, l in attn[:5]))
    print("highest attention scores:", ", ".join(f"layer {l}: {s:.4f}" for s, l in attn[-5:]))

    try:
        root = ET.parse(svg).getroot()
        ns = "{http://www.w3.org/2000/svg}"
        if root.tag != ns + "svg":
            failures.append(f"plot root is {root.tag}")
        title = "".join(next(root.iter(ns + "text")).itertext())
        if "mollm2" not in title.lower() and "smollm" not in title.lower():
            failures.append(f"plot title {title!r} does not name the model")
        if len(list(root.iter(ns + "polyline"))) != 3:
            failures.append("plot: not three lines")
    except (ET.ParseError, OSError, StopIteration) as e:
        failures.append(f"plot: {e}")

    if failures:
        print("\n".join(["FAILURES:"] + failures))
        sys.exit(1)
    print("real-model scores and plot ok")


if __name__ == "__main__":
    main()
