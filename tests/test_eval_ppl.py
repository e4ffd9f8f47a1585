"""`trimlm eval --ppl` against an independent numpy computation.

  test_eval_ppl.py synthetic   tiny random GGUF models (tests/py/synth_gguf.py):
                               the perplexity must equal llama-perplexity's
                               procedure run on the numpy reference forward pass
                               (tests/py/ref_llama.py), with and without BOS
  test_eval_ppl.py real        the default model on the first 100,000 bytes of
                               wikitext-2 test: the first chunk's perplexity
                               equals the numpy reference's (tokens from a
                               `tokenizers` BPE of the GGUF's vocabulary);
                               repeatable, the same with 1 and 2 threads

The procedure (llama.cpp tools/perplexity, tests/py/ref_eval.py): tokens of
the whole text (BOS first when the model adds it), scored chunk by chunk.
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
        from ref_eval import reference_ppl
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

# trimlm (f32 arithmetic, f32 KV cache) against the float64 numpy reference
# on the same dequantized weights, first chunk (255 scored tokens): measured
# +3.5e-7 relative on the perplexity (avx512 kernels). 1e-5 leaves a 30x
# margin for other kernel sets' summation orders, while scoring one token too
# many or too few, a missing BOS rule or any broken layer moves it by 1e-3 or
# more (one token's NLL is ~2.5 nats, 1/255 of the mean).
REAL_PPL_REL = 1e-5


def gguf_bos(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    add = r.fields.get("tokenizer.ggml.add_bos_token")
    bos = r.fields.get("tokenizer.ggml.bos_token_id")
    return (bool(add.contents()) if add else False), (int(bos.contents()) if bos else None)


def test_real():
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # against numpy on the f32 widening of the weights (the in-place load,
    # with int8 activations, is compared with it by test_gguf_inplace.py)
    os.environ["TRIMLM_GGUF_F32"] = "1"
    import ref_llama
    from ref_eval import gguf_bpe_encoder, reference_ppl
    os.makedirs(OUT, exist_ok=True)
    src = os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.test.raw")
    with open(src, "rb") as f:
        prefix = f.read(100_000)
    text_path = os.path.join(OUT, "wiki.test.100k.raw")
    with open(text_path, "wb") as f:
        f.write(prefix)
    model = real_model_path()
    # The first chunk (512 tokens, 255 scored) against the numpy reference:
    # its float64 forward pass takes ~30 s per chunk on this model.
    got, _ = trimlm_eval(model, text_path, 512, "--chunks", "1", "--kv", "f32", "-t", "2")
    add_bos, bos = gguf_bos(model)
    tokens = ([bos] if add_bos else []) + gguf_bpe_encoder(model)(prefix.decode("utf-8"))
    ref = ref_llama.load(model, np.float64)
    want_ppl, want_err, want_count, want_chunks = reference_ppl(ref, tokens, 512, add_bos, bos, 1)
    rel = got["ppl"] / want_ppl - 1
    print(f"real model, wikitext-2 test prefix, ctx 512, chunk 1: trimlm {got}, "
          f"numpy ppl {want_ppl:.6f} stderr {want_err:.6f} ({rel:+.2e})")
    check(f"ppl of the first chunk equals numpy's within {REAL_PPL_REL:.0e} ({rel:+.2e})",
          abs(rel) <= REAL_PPL_REL and got["tokens_scored"] == want_count == 255
          and got["chunks"] == want_chunks == 1
          and abs(got["ppl_stderr"] - want_err) <= 1e-4 * want_err, f"{got} vs {want_ppl}")
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
