"""`trimlm score` on the default real model (SmolLM2-135M-Instruct):
2048 tokens of the built-in calibration text, JSON and the SVG plot.

  - 30 layers x (attn, mlp, block), every score finite and in [0, 2]
    (1 - cos of two vectors), not all equal;
  - the plot parses as SVG (xml.etree) with the model's name in its title.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from testutil import scratch_dir

TRIMLM = os.environ["TRIMLM"]
N_LAYER = 30


def main():
    out = scratch_dir("calib_real")
    svg = os.path.join(out, "smollm2-scores.svg")
    if os.path.exists(svg):
        os.remove(svg)
    r = subprocess.run([TRIMLM, "score", "-m", "smollm2-135m-instruct", "--calib-tokens", "2048",
                        "--format", "json", "--plot", svg], stdout=subprocess.PIPE,
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
    scores = [e["score"] for e in data]
    bad = [e for e in data if not isinstance(e["score"], (int, float)) or not 0.0 <= e["score"] <= 2.0]
    if bad:
        failures.append(f"scores not finite in [0, 2]: {bad[:5]}")
    if len(set(scores)) < len(scores) // 2:
        failures.append("scores are suspiciously uniform")
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
