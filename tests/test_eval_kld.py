"""`trimlm eval --ppl FILE --kld REF` against an independent numpy computation.

Tiny synthetic GGUF models with one vocabulary (tests/py/synth_gguf.py): the
same random weights stored f32 and q4_1 (a small divergence), and two models
with different random weights (a large one). The numpy reference runs both
through tests/py/ref_llama.py in float64 on llama-perplexity's chunks and
scored positions (j = ctx/2 .. ctx-2) and computes, per position,
KL(P_ref || P_model) = sum p_ref (log p_ref - log p_model), then the mean,
its standard error, median, 99th percentile (numpy's linear interpolation),
top-1 agreement and both perplexities. Also: models with different
vocabularies give one clear error line.
"""
import json
import math
import os
import subprocess
import sys

# What is checked is the divergence arithmetic against numpy on the f32
# widening of the weights (the in-place load is checked by test_gguf_inplace.py).
os.environ["TRIMLM_GGUF_F32"] = "1"

import numpy as np

from testutil import check, log_softmax, summary
import testutil

TRIMLM = os.environ["TRIMLM"]
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "eval_kld")
SKIP = 77


def reference(model, ref, tokens, ctx):
    n_chunk = len(tokens) // ctx
    first = ctx // 2
    kld, agree, nll_m, nll_r = [], [], [], []
    for c in range(n_chunk):
        chunk = tokens[c * ctx:(c + 1) * ctx]
        lm = log_softmax(model.session().forward(chunk))[first:ctx - 1]
        lr = log_softmax(ref.session().forward(chunk))[first:ctx - 1]
        kld += list((np.exp(lr) * (lr - lm)).sum(axis=-1))
        agree += list(lm.argmax(axis=-1) == lr.argmax(axis=-1))
        targets = np.array(chunk[first + 1:ctx])
        nll_m += list(-lm[np.arange(len(targets)), targets])
        nll_r += list(-lr[np.arange(len(targets)), targets])
    kld = np.array(kld)

    def ppl(nll):
        nll = np.array(nll)
        p = math.exp(nll.mean())
        return p, math.sqrt(nll.var() / (len(nll) - 1)) * p

    return {"kld_mean": kld.mean(), "kld_stderr": kld.std(ddof=1) / math.sqrt(len(kld)),
            "kld_median": np.percentile(kld, 50), "kld_p99": np.percentile(kld, 99),
            "top1_agreement_pct": 100.0 * np.mean(agree), "ppl": ppl(nll_m)[0], "ppl_ref": ppl(nll_r)[0],
            "ppl_stderr": ppl(nll_m)[1], "tokens_scored": len(kld), "chunks": n_chunk}


def trimlm_kld(model, ref, text, ctx, *extra):
    cmd = [TRIMLM, "eval", "-m", model, "--kld", ref, "--ppl", text, "--ctx", str(ctx), "--kv", "f32",
           "--json", *extra]
    return testutil.run(cmd, 300)


def main():
    try:
        import ref_llama
        import synth_gguf
    except ImportError as e:
        print(f"skipped: the synthetic model helpers are not available ({e})")
        sys.exit(SKIP)
    os.makedirs(OUT, exist_ok=True)
    shape = dict(n_vocab=320, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=96, ctx=256)
    f32 = os.path.join(OUT, "a-f32.gguf")
    q4 = os.path.join(OUT, "a-q4_1.gguf")
    other = os.path.join(OUT, "b-f32.gguf")
    w = synth_gguf.write_gguf(f32, seed=21, **shape)
    synth_gguf.write_gguf(q4, weights=w, qtype="q4_1", **shape)
    synth_gguf.write_gguf(other, seed=22, **shape)

    rng = np.random.default_rng(3)
    # characters no synthetic merge touches: one token per byte, id == byte
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-\n", dtype=np.uint8)
    text = bytes(rng.choice(alphabet, size=200))
    text_path = os.path.join(OUT, "text.txt")
    with open(text_path, "wb") as f:
        f.write(text)
    tokens = list(text)
    ctx = 64

    models = {p: ref_llama.load(p, np.float64) for p in (f32, q4, other)}
    for name, model, ref in (("q4_1 vs f32", q4, f32), ("two random models", other, f32)):
        want = reference(models[model], models[ref], tokens, ctx)
        rc, out, err = trimlm_kld(model, ref, text_path, ctx, "-t", "1")
        check(f"{name}: exit 0, one JSON line", rc == 0 and len(out.splitlines()) == 1,
              f"rc={rc} {out!r} {err!r}")
        if rc != 0:
            continue
        got = json.loads(out)
        print(f"{name}: trimlm {got}\n{' ' * len(name)}  numpy  {want}")
        scale = max(1.0, want["kld_mean"])
        for k in ("kld_mean", "kld_median", "kld_p99"):
            check(f"{name}: {k} equals numpy (1e-5)", abs(got[k] - want[k]) <= 1e-5 * scale,
                  f"{got[k]} vs {want[k]}")
        check(f"{name}: kld_stderr equals numpy", abs(got["kld_stderr"] - want["kld_stderr"])
              <= 1e-5 * scale, f"{got['kld_stderr']} vs {want['kld_stderr']}")
        check(f"{name}: top-1 agreement equals numpy",
              abs(got["top1_agreement_pct"] - want["top1_agreement_pct"]) < 1e-9,
              f"{got['top1_agreement_pct']} vs {want['top1_agreement_pct']}")
        check(f"{name}: both perplexities equal numpy (1e-5 relative)",
              abs(got["ppl"] - want["ppl"]) <= 1e-5 * want["ppl"]
              and abs(got["ppl_ref"] - want["ppl_ref"]) <= 1e-5 * want["ppl_ref"],
              f"{got} vs {want}")
        check(f"{name}: tokens scored and chunks", got["tokens_scored"] == want["tokens_scored"]
              and got["chunks"] == want["chunks"], f"{got} vs {want}")

    rc, out, err = trimlm_kld(f32, f32, text_path, ctx)
    got = json.loads(out) if rc == 0 else {}
    check("a model against itself: KLD 0, 100% agreement",
          rc == 0 and got["kld_mean"] < 1e-9 and got["top1_agreement_pct"] == 100.0, f"{out!r} {err!r}")
    rc, out, err = trimlm_kld(q4, f32, text_path, ctx, "--chunks", "1", "--batch", "16")
    check("--chunks 1 --batch 16", rc == 0 and json.loads(out)["chunks"] == 1
          and json.loads(out)["tokens_scored"] == ctx - 1 - ctx // 2, f"{out!r} {err!r}")

    p = subprocess.run([TRIMLM, "eval", "-m", q4, "--kld", f32, "--ppl", text_path, "--ctx", str(ctx)],
                       capture_output=True, timeout=300)
    out = p.stdout.decode()
    check("text output: KLD, percentiles, agreement, both PPLs",
          p.returncode == 0 and "KLD = " in out and "99th percentile" in out and "top-1" in out
          and out.count("PPL = ") == 2, repr(out))

    bigger = os.path.join(OUT, "c-vocab330.gguf")
    synth_gguf.write_gguf(bigger, seed=23, **dict(shape, n_vocab=330))
    p = subprocess.run([TRIMLM, "eval", "-m", bigger, "--kld", f32, "--ppl", text_path, "--ctx", str(ctx)],
                       capture_output=True, timeout=300)
    err = p.stderr.decode()
    check("different vocabularies: exit 1, one line saying so",
          p.returncode == 1 and len(err.strip().splitlines()) == 1 and "vocabulary" in err
          and "330" in err and "320" in err and p.stdout == b"", f"rc={p.returncode} {err!r}")
    p = subprocess.run([TRIMLM, "eval", "-m", q4, "--kld", f32], capture_output=True, timeout=60)
    check("--kld without --ppl is a usage error", p.returncode == 2 and b"--ppl" in p.stderr,
          f"rc={p.returncode} {p.stderr!r}")

    sys.exit(summary())


if __name__ == "__main__":
    main()
