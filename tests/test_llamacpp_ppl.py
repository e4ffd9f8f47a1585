#!/usr/bin/env python3
"""README's perplexity claim, rerun by the command the README gives for it:
`bench/compare-llamacpp --ppl` on the default model (SmolLM2-135M-Instruct
Q4_1 GGUF), the first 100,000 bytes of WikiText-2 test (data/eval), ctx 512.

llama.cpp's llama-perplexity computes with the Q4_1 weights, trimlm with them
dequantized to f32, so the two differ a little (README: -0.35 %); the check
is the README's: within 1 % of each other, on the same number of chunks.
Both perplexities are also checked against the README's figures (23.61 and
23.69) within 2 %, so that the two programs cannot agree on a wrong text or
a wrong model.

Exits 77 (skipped) when llama.cpp's tools are not built (tools/test.sh builds
them with bench/compare-llamacpp --build-only before ctest).
"""
import json
import os
import subprocess
import sys

import testutil
from testutil import check, summary

SKIP = 77
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_BYTES = 100_000
TOLERANCE = 0.01
README_PPL = {"trimlm": 23.611, "llamacpp": 23.694}


def main():
    bin_dir = testutil.llamacpp_bin()
    if not bin_dir:
        print("SKIP: llama.cpp's tools are not built (bench/compare-llamacpp --build-only)")
        return SKIP
    out = testutil.fresh_dir(os.path.join(testutil.scratch_dir("llamacpp_ppl"), "results"))
    threads = str(min(2, os.cpu_count() or 1))
    cmd = [sys.executable, os.path.join(REPO, "bench", "compare-llamacpp"), "--ppl",
           "--llamacpp-bin", bin_dir, "--trimlm", os.environ["TRIMLM"],
           "--model", testutil.real_model_path(),
           "--text", os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.test.raw"),
           "--text-bytes", str(TEXT_BYTES), "--ctx", "512", "--threads", threads,
           "--tolerance", str(TOLERANCE), "--results", out]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    print(p.stdout)
    summary_path = os.path.join(out, "ppl-summary.json")
    if not os.path.isfile(summary_path):
        check("compare-llamacpp --ppl wrote its summary", False, f"rc {p.returncode}: {p.stderr[-3000:]}")
        return summary()
    with open(summary_path) as f:
        s = json.load(f)
    ours, theirs = s["trimlm"]["ppl"], s["llamacpp"]["ppl"]
    rel = (ours - theirs) / theirs
    check(f"the text is the first {TEXT_BYTES} bytes (cut to a whole character)",
          TEXT_BYTES - 4 < s["text_bytes"] <= TEXT_BYTES, s["text_bytes"])
    check(f"both scored the same chunks ({s['llamacpp']['chunks']} and {s['trimlm']['chunks']})",
          s["llamacpp"]["chunks"] == s["trimlm"]["chunks"] and s["trimlm"]["chunks"] >= 40)
    check(f"trimlm {ours:.4f} within {TOLERANCE:.0%} of llama-perplexity {theirs:.4f} "
          f"(rel {rel:+.3%})", abs(rel) < TOLERANCE)
    check("compare-llamacpp's exit status says the same", (p.returncode == 0) == (abs(rel) <= TOLERANCE),
          p.returncode)
    for prog, got in (("trimlm", ours), ("llamacpp", theirs)):
        want = README_PPL[prog]
        check(f"{prog} {got:.4f} within 2% of the README's {want}", abs(got - want) / want < 0.02)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
