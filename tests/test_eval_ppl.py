"""`trimlm eval --ppl` against an independent numpy computation.

  test_eval_ppl.py synthetic   tiny random GGUF models (tests/py/synth_gguf.py):
                               the perplexity must equal llama-perplexity's
                               procedure run on the numpy reference forward pass
                               (tests/py/ref_llama.py), with and without BOS
  test_eval_ppl.py real        the default model on the first 100,000 bytes of
                               wikitext-2 test (its first chunks): finite,
                               plausible, repeatable, the same with 1 and 2 threads

The procedure (llama.cpp tools/perplexity): tokens of the whole text (BOS
first when the model adds it); chunk i = tokens[i*ctx:(i+1)*ctx] with its
first token replaced by BOS when the model adds BOS; fresh KV cache; score
positions j = ctx/2 .. ctx-2 with -log softmax(logits[j])[tok[j+1]];
ppl = exp(mean); stderr = sqrt(var / (count - 1)) * ppl.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np

from testutil import check, real_model_path, summary
import testutil

TRIMLM = os.environ["TRIMLM"]
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "eval_ppl")
SKIP = 77


def trimlm_eval(model, text_path, ctx, *extra, timeout=600):
    cmd = [TRIMLM, "eval", "-m", model, "--ppl", text_path, "--ctx", str(ctx), "--json", *extra]
    rc, out, err = testutil.run(cmd, timeout)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}: {err!r}")
    lines = out.splitlines()
    if len(lines) != 1:
        raise RuntimeError(f"expected one JSON line on stdout, got {lines!r}")
    return json.loads(lines[0]), err


# ------------------------------------------------------------ synthetic

def reference_ppl(model, tokens, ctx, add_bos, bos, max_chunks=None):
    """llama-perplexity's procedure on the numpy forward pass (float64)."""
    n_chunk = len(tokens) // ctx
    if max_chunks:
        n_chunk = min(n_chunk, max_chunks)
    first = ctx // 2
    nll = []
    for c in range(n_chunk):
        chunk = list(tokens[c * ctx:(c + 1) * ctx])
        inputs = list(chunk)
        if add_bos:
            inputs[0] = bos
        logits = model.session().forward(inputs)                    # (ctx, n_vocab)
        for j in range(first, ctx - 1):
            row = logits[j]
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            nll.append(lse - row[chunk[j + 1]])
    nll = np.array(nll)
    mean = nll.mean()
    ppl = math.exp(mean)
    var = (nll * nll).mean() - mean * mean
    err = math.sqrt(var / (len(nll) - 1)) * ppl if var > 0 else 0.0
    return ppl, err, len(nll), n_chunk


def synthetic_text(rng, n_bytes):
    """Characters that no synthetic merge touches (the merges join lowercase
    letters), so that every byte is its own token: id == byte value."""
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-\n", dtype=np.uint8)
    return bytes(rng.choice(alphabet, size=n_bytes))


def test_synthetic():
    try:
        import gguf
        import ref_llama
        import synth_gguf
    except ImportError as e:
        print(f"skipped: the synthetic model helpers are not available ({e})")
        sys.exit(SKIP)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(1234)
    ctx = 64
    text = synthetic_text(rng, 300)
    text_path = os.path.join(OUT, "synthetic.txt")
    with open(text_path, "wb") as f:
        f.write(text)

    for add_bos in (False, True):
        path = os.path.join(OUT, f"synthetic-bos{int(add_bos)}.gguf")
        original = gguf.GGUFWriter.add_add_bos_token
        try:
            # the helper writes add_bos_token = False; this run wants `add_bos`
            gguf.GGUFWriter.add_add_bos_token = lambda self, value: original(self, add_bos)
            synth_gguf.write_gguf(path, n_vocab=320, n_embd=64, n_layer=2, n_head=4, n_head_kv=2,
                                  n_ff=96, ctx=256, seed=7)
        finally:
            gguf.GGUFWriter.add_add_bos_token = original
        bos = 320 - 3  # synth_gguf: <|endoftext|>
        tokens = ([bos] if add_bos else []) + list(text)
        model = ref_llama.load(path, np.float64)
        for extra, max_chunks in (((), None), (("--chunks", "2"), 2), (("--batch", "16", "-t", "1"), None)):
            tag = f"bos={add_bos} {' '.join(extra) or 'defaults'}"
            want_ppl, want_err, want_count, want_chunks = reference_ppl(
                model, tokens, ctx, add_bos, bos, max_chunks)
            got, _ = trimlm_eval(path, text_path, ctx, *extra)
            ok = (got["tokens_scored"] == want_count and got["chunks"] == want_chunks
                  and got["ctx"] == ctx
                  and abs(got["ppl"] - want_ppl) <= 1e-4 * want_ppl
                  and abs(got["ppl_stderr"] - want_err) <= 1e-3 * want_err + 1e-9)
            check(f"synthetic ppl matches numpy ({tag})", ok,
                  f"trimlm {got} vs numpy ppl={want_ppl} stderr={want_err} "
                  f"count={want_count} chunks={want_chunks}")

    short = os.path.join(OUT, "short.txt")
    with open(short, "wb") as f:
        f.write(text[:100])
    p = subprocess.run([TRIMLM, "eval", "-m", path, "--ppl", short, "--ctx", str(ctx)],
                       capture_output=True, timeout=60)
    err = p.stderr.decode()
    check("too short a text is a clear one-line error",
          p.returncode == 1 and len(err.strip().splitlines()) == 1 and short in err
          and "too short" in err, f"rc={p.returncode} err={err!r}")
    p = subprocess.run([TRIMLM, "eval", "-m", path, "--ppl", text_path, "--ctx", str(ctx)],
                       capture_output=True, timeout=120)
    out = p.stdout.decode().strip()
    check("text output is one PPL line", p.returncode == 0 and out.startswith("PPL = ")
          and "tokens scored" in out and len(out.splitlines()) == 1, f"{out!r}")


# ----------------------------------------------------------------- real

def test_real():
    os.makedirs(OUT, exist_ok=True)
    src = os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.test.raw")
    with open(src, "rb") as f:
        prefix = f.read(100_000)
    text_path = os.path.join(OUT, "wiki.test.100k.raw")
    with open(text_path, "wb") as f:
        f.write(prefix)
    model = real_model_path()
    # The first 8 chunks (4,096 tokens, 2,040 scored) keep the suite fast on
    # two cores; the repeat and thread comparisons use 2 chunks.
    full, _ = trimlm_eval(model, text_path, 512, "--chunks", "8")
    print(f"real model, wikitext-2 test prefix, ctx 512, 8 chunks: {full}")
    check("ppl is finite and plausible for SmolLM2-135M (5..60)",
          math.isfinite(full["ppl"]) and 5 < full["ppl"] < 60 and full["ppl_stderr"] > 0
          and full["tokens_scored"] == 8 * 255 and full["chunks"] == 8, f"{full}")
    a, _ = trimlm_eval(model, text_path, 512, "--chunks", "2", "-t", "2")
    b, _ = trimlm_eval(model, text_path, 512, "--chunks", "2", "-t", "2")
    check("a second run gives the same ppl", a["ppl"] == b["ppl"], f"{a} vs {b}")
    c, _ = trimlm_eval(model, text_path, 512, "--chunks", "2", "-t", "1")
    check("1 and 2 threads agree within 1e-3", abs(a["ppl"] - c["ppl"]) <= 1e-3 * a["ppl"],
          f"{a} vs {c}")


def main():
    if sys.argv[1] == "synthetic":
        test_synthetic()
    else:
        test_real()
    sys.exit(summary())


if __name__ == "__main__":
    main()
