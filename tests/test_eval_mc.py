"""`trimlm eval --mc` against an independent numpy computation.

  test_eval_mc.py synthetic   a tiny random GGUF model (tests/py/synth_gguf.py)
                              and a few items of each task format: each
                              choice's log-likelihood must equal the numpy
                              forward pass (tests/py/ref_llama.py) on the
                              tokens of a Hugging Face `tokenizers` BPE built
                              from the same vocabulary (1e-4), the chosen
                              answers and accuracies must agree; bad files
                              give one clear line; --json has its fields.
  test_eval_mc.py real        the default model on the first items of each
                              data set in data/eval: tokens, every choice's log-likelihood
                              (5e-4 nats), the chosen answers, acc and
                              acc_norm equal the float64 numpy forward pass on
                              the `tokenizers` reference's tokens.

lm-evaluation-harness's definition: ll_c = sum of log p of the tokens of
context + continuation_c after their common prefix with tokenize(context);
acc picks argmax ll_c, acc_norm argmax ll_c / bytes(continuation_c).
"""
import json
import math
import os
import sys

# The numpy reference runs on the f32 widening of a GGUF's weights; trimlm
# does the same here (the in-place load is checked by test_gguf_inplace.py).
os.environ["TRIMLM_GGUF_F32"] = "1"

import numpy as np

from testutil import check, real_model_path, stderr_lines, summary
import testutil

TRIMLM = os.environ["TRIMLM"]
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "eval_mc")
SKIP = 77


def run(args, timeout=600):
    return testutil.run([TRIMLM, "eval", *args], timeout)


def write_lines(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


# ------------------------------------------------------------ synthetic

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "to", "its", "home",
         "where", "it", "slept", "in", "sun", "while", "dog", "barked", "at", "bird"]


def sentence(rng, n):
    return " ".join(rng.choice(WORDS, size=n))


def synthetic_items(rng):
    """Items of every format, with choices of different lengths."""
    hs = [{"idx": i, "ctx": "Walking: " + sentence(rng, 6), "label": int(rng.integers(4)),
           "endings": [sentence(rng, int(rng.integers(1, 6))) + "." for _ in range(4)]} for i in range(4)]
    arc = [{"query": "Question: " + sentence(rng, 5) + "?", "gold": int(rng.integers(3)),
            "choices": [sentence(rng, int(rng.integers(1, 4))) for _ in range(3)]} for _ in range(4)]
    boolq = [{"query": "Passage: " + sentence(rng, 12) + ".\nQuestion: " + sentence(rng, 4) + "?",
              "choices": ["no", "yes"], "gold": int(rng.integers(2))} for _ in range(3)]
    piqa = [{"goal": sentence(rng, 4), "sol1": sentence(rng, 3), "sol2": sentence(rng, 5)} for _ in range(3)]
    piqa_labels = [int(rng.integers(2)) for _ in piqa]
    return {"hellaswag": hs, "arc": arc, "boolq": boolq, "piqa": piqa}, piqa_labels


def prompts(task, items, labels):
    """(context, continuations, gold): the harness's prompt strings."""
    if task == "hellaswag":
        return [(it["ctx"], [" " + e for e in it["endings"]], it["label"]) for it in items]
    if task == "piqa":
        return [("Question: " + it["goal"] + "\nAnswer:", [" " + it["sol1"], " " + it["sol2"]], g)
                for it, g in zip(items, labels)]
    return [(it["query"] + "\nAnswer:", [" " + c for c in it["choices"]], it["gold"]) for it in items]


def hf_tokenizer(path):
    """A `tokenizers` byte-level BPE from the GGUF's vocabulary and merges."""
    from gguf import GGUFReader
    from tokenizers import Tokenizer, models, pre_tokenizers

    r = GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return lambda s: tok.encode(s, add_special_tokens=False).ids


def reference_lls(model, encode, context, conts):
    """Per choice: (sum log p of the continuation tokens, their count), float64."""
    ctx_tok = encode(context)
    out = []
    for cont in conts:
        seq = encode(context + cont)
        start = 0
        while start < min(len(ctx_tok), len(seq)) and ctx_tok[start] == seq[start]:
            start += 1
        start = max(1, min(start, len(seq) - 1))
        logits = model.session().forward(seq[:-1])
        m = logits.max(axis=-1, keepdims=True)
        lp = logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))
        out.append((float(sum(lp[j - 1, seq[j]] for j in range(start, len(seq)))), len(seq) - start))
    return out


def argmax_first(values):
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def test_synthetic():
    try:
        import ref_llama
        import synth_gguf
    except ImportError as e:
        print(f"skipped: the synthetic model helpers are not available ({e})")
        sys.exit(SKIP)
    os.makedirs(OUT, exist_ok=True)
    model_path = os.path.join(OUT, "synthetic.gguf")
    synth_gguf.write_gguf(model_path, n_vocab=320, n_embd=64, n_layer=2, n_head=4, n_head_kv=2,
                          n_ff=96, ctx=256, seed=11)
    model = ref_llama.load(model_path, np.float64)
    encode = hf_tokenizer(model_path)
    rng = np.random.default_rng(5)
    sets, piqa_labels = synthetic_items(rng)

    for task, items in sets.items():
        path = os.path.join(OUT, f"{task}.jsonl" if task != "piqa" else "valid.jsonl")
        write_lines(path, items)
        if task == "piqa":
            write_lines(os.path.join(OUT, "valid-labels.lst"), [str(g) for g in piqa_labels])
        details = os.path.join(OUT, f"{task}.details.jsonl")
        rc, out, err = run(["-m", model_path, "--mc", path, "--task", task, "--kv", "f32", "-t", "1",
                            "--json", "--details", details])
        check(f"{task}: exit 0, one JSON line, quiet off a terminal",
              rc == 0 and len(out.splitlines()) == 1 and err == "", f"rc={rc} err={err!r} out={out!r}")
        if rc != 0:
            continue
        got = json.loads(out)
        with open(details) as f:
            rows = [json.loads(l) for l in f]
        want = prompts(task, items, piqa_labels)
        check(f"{task}: a details line per item", len(rows) == len(want), f"{len(rows)} vs {len(want)}")
        correct = [0, 0]
        for k, ((context, conts, gold), row) in enumerate(zip(want, rows)):
            ref = reference_lls(model, encode, context, conts)
            ll = [x for x, _ in ref]
            tok_ok = all(row["tokens"][c] == encode(context + conts[c]) for c in range(len(conts)))
            check(f"{task} item {k}: tokens equal the reference tokenizer's", tok_ok,
                  f"{row['tokens']} vs {[encode(context + c) for c in conts]}")
            check(f"{task} item {k}: log-likelihoods equal numpy (1e-4)",
                  all(abs(a - b) <= 1e-4 for a, b in zip(row["ll"], ll))
                  and row["n_tokens"] == [n for _, n in ref], f"trimlm {row['ll']} {row['n_tokens']} vs {ref}")
            pred = argmax_first(ll)
            pred_norm = argmax_first([x / len(c.encode()) for x, c in zip(ll, conts)])
            check(f"{task} item {k}: chosen answers equal",
                  row["pred"] == pred and row["pred_norm"] == pred_norm and row["gold"] == gold,
                  f"trimlm {row} vs pred={pred} pred_norm={pred_norm} gold={gold}")
            correct[0] += pred == gold
            correct[1] += pred_norm == gold
        n = len(want)
        acc, acc_norm = correct[0] / n, correct[1] / n
        check(f"{task}: --json acc, acc_norm, stderr, N",
              got["task"] == task and got["n"] == n and abs(got["acc"] - acc) < 1e-12
              and abs(got["acc_norm"] - acc_norm) < 1e-12
              and abs(got["acc_stderr"] - math.sqrt(acc * (1 - acc) / (n - 1))) < 1e-9
              and all(k in got for k in ("acc_norm_stderr", "acc_tok", "tokens", "tokens_per_s", "seconds")),
              f"{got} vs acc={acc} acc_norm={acc_norm}")

    # --limit and the text output
    path = os.path.join(OUT, "arc.jsonl")
    rc, out, err = run(["-m", model_path, "--mc", path, "--task", "arc", "--limit", "2", "--json"])
    check("--limit 2 scores two items", rc == 0 and json.loads(out)["n"] == 2, f"rc={rc} {out!r} {err!r}")
    rc, out, err = run(["-m", model_path, "--mc", path, "--task", "arc"])
    check("text output names acc, acc_norm and tokens/s",
          rc == 0 and "acc " in out and "acc_norm" in out and "tokens/s" in out, f"rc={rc} {out!r}")

    test_errors(model_path)


def expect_fail(name, args, must_contain, rc_want=1):
    rc, out, err = run(args)
    lines = stderr_lines(err)
    ok = rc == rc_want and len(lines) == 1 and all(s in lines[0] for s in must_contain) and out == ""
    check(f"error: {name}", ok, f"rc={rc} stderr={err!r} stdout={out[:200]!r}")


def test_errors(model_path):
    good = {"query": "Question: what?", "choices": ["a", "b"], "gold": 0}
    bad_json = os.path.join(OUT, "bad-json.jsonl")
    write_lines(bad_json, [good, good, '{"query": "Question: x", "choices": ["a", "b"], "gold": 0'])
    expect_fail("a bad JSON line names file and line", ["-m", model_path, "--mc", bad_json, "--task", "arc"],
                [bad_json + ":3:", "JSON"])
    fields = os.path.join(OUT, "wrong-fields.jsonl")
    write_lines(fields, [good, {"question": "what?", "choices": ["a", "b"], "gold": 0}])
    expect_fail("a missing field names it", ["-m", model_path, "--mc", fields, "--task", "arc"],
                [fields + ":2:", '"query"'])
    expect_fail("arc items read as hellaswag", ["-m", model_path, "--mc", fields, "--task", "hellaswag"],
                [fields + ":1:", '"ctx"', "hellaswag"])
    gold = os.path.join(OUT, "bad-gold.jsonl")
    write_lines(gold, [dict(good, gold=2)])
    expect_fail("gold out of range", ["-m", model_path, "--mc", gold, "--task", "arc"],
                [gold + ":1:", "gold", "2 choices"])
    missing = os.path.join(OUT, "no-such-file.jsonl")
    expect_fail("a missing file", ["-m", model_path, "--mc", missing, "--task", "arc"], [missing])
    piqa = os.path.join(OUT, "piqa-nolabels.jsonl")
    write_lines(piqa, [{"goal": "g", "sol1": "a", "sol2": "b"}])
    expect_fail("PIQA without its labels", ["-m", model_path, "--mc", piqa, "--task", "piqa"],
                ["piqa-nolabels-labels.lst", "--labels"])
    short = os.path.join(OUT, "short-labels.lst")
    write_lines(short, [])
    write_lines(piqa, [{"goal": "g", "sol1": "a", "sol2": "b"}] * 2)
    write_lines(short, ["1"])
    expect_fail("PIQA labels shorter than the items",
                ["-m", model_path, "--mc", piqa, "--task", "piqa", "--labels", short], [short, "do not match"])
    expect_fail("unknown task", ["-m", model_path, "--mc", piqa, "--task", "mmlu"], ["'mmlu'", "--task"], 2)
    expect_fail("--mc without --task", ["-m", model_path, "--mc", piqa], ["--task"], 2)
    expect_fail("--mc with --ppl", ["-m", model_path, "--mc", piqa, "--task", "piqa", "--ppl", piqa],
                ["--mc", "--ppl"], 2)


# ----------------------------------------------------------------- real

# The default model (Q4_1 GGUF, dequantized to f32 by trimlm, f32 KV cache)
# against the float64 numpy forward pass on the same dequantized weights:
# each choice's log-likelihood is a sum of 1..~40 token log-probabilities.
# f32 arithmetic alone: measured at most 4.1e-5 nats per choice over these
# 12 items (avx512 kernels). 5e-4 leaves a 12x margin for other kernel sets'
# summation orders; an f16 KV cache, a token scored too many or too few, or
# a wrong prefix all move a choice by far more than that.
REAL_LL_TOL = 5e-4
# The first items of each set: ~1,400 tokens through the numpy model (~60 s).
REAL_ITEMS = {"hellaswag": 3, "arc": 4, "piqa": 3, "boolq": 2}


def gguf_bos(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    add = r.fields.get("tokenizer.ggml.add_bos_token")
    bos = r.fields.get("tokenizer.ggml.bos_token_id")
    return (bool(add.contents()) if add else False), (int(bos.contents()) if bos else None)


def test_real():
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import ref_llama
    from ref_eval import mc_choice_lls
    from smollm2_tokenizer import smollm2_reference
    data = os.environ["TLM_EVAL_DATA"]
    sets = {"hellaswag": "hellaswag/hellaswag_val_first2000.jsonl", "arc": "arc_easy/arc_easy.jsonl",
            "piqa": "piqa/valid.jsonl", "boolq": "boolq/boolq.jsonl"}
    os.makedirs(OUT, exist_ok=True)
    path = real_model_path()
    tok, _ = smollm2_reference(path)
    encode = lambda s: tok.encode(s, add_special_tokens=False).ids
    add_bos, bos = gguf_bos(path)
    model = ref_llama.load(path, np.float64)
    worst = 0.0
    for task, rel in sets.items():
        n = REAL_ITEMS[task]
        src = os.path.join(data, rel)
        details = os.path.join(OUT, f"real-{task}.details.jsonl")
        rc, out, err = run(["-m", path, "--mc", src, "--task", task, "--limit", str(n),
                            "--kv", "f32", "-t", "1", "--json", "--details", details])
        check(f"real {task}: exit 0", rc == 0, f"rc={rc} {err!r}")
        if rc != 0:
            continue
        got = json.loads(out)
        with open(src, encoding="utf-8") as f:
            items = [json.loads(l) for l, _ in zip(f, range(n))]
        labels = None
        if task == "piqa":
            with open(os.path.join(os.path.dirname(src), "valid-labels.lst")) as f:
                labels = [int(l) for l in f.read().split()[:n]]
        want = prompts(task, items, labels)
        with open(details) as f:
            rows = [json.loads(l) for l in f]
        check(f"real {task}: {n} items, a details line each", got["n"] == n and len(rows) == n,
              f"{got} {len(rows)} rows")
        correct = [0, 0]
        for k, ((context, conts, gold), row) in enumerate(zip(want, rows)):
            ref, seqs = mc_choice_lls(model, encode, context, conts, bos if add_bos else None)
            ll = [x for x, _ in ref]
            check(f"real {task} item {k}: tokens equal the reference tokenizer's",
                  row["tokens"] == seqs, f"{row['tokens']} vs {seqs}")
            err_ll = max(abs(a - b) for a, b in zip(row["ll"], ll))
            worst = max(worst, err_ll)
            check(f"real {task} item {k}: log-likelihoods equal numpy's within {REAL_LL_TOL:.0e} "
                  f"({err_ll:.1e})", err_ll <= REAL_LL_TOL and row["n_tokens"] == [c for _, c in ref],
                  f"trimlm {row['ll']} {row['n_tokens']} vs numpy {ref}")
            norm = [x / len(c.encode("utf-8")) for x, c in zip(ll, conts)]
            pred, pred_norm = argmax_first(ll), argmax_first(norm)
            check(f"real {task} item {k}: acc and acc_norm choices equal numpy's",
                  row["pred"] == pred and row["pred_norm"] == pred_norm and row["gold"] == gold,
                  f"trimlm {row} vs pred={pred} pred_norm={pred_norm} gold={gold} ll={ll}")
            correct[0] += pred == gold
            correct[1] += pred_norm == gold
        acc, acc_norm = correct[0] / n, correct[1] / n
        check(f"real {task}: acc {got['acc']:.3f}, acc_norm {got['acc_norm']:.3f} equal numpy's",
              abs(got["acc"] - acc) < 1e-12 and abs(got["acc_norm"] - acc_norm) < 1e-12,
              f"{got} vs acc={acc} acc_norm={acc_norm}")
        print(f"real {task} ({n} items): {got}")
    print(f"real: largest |trimlm - numpy| per choice log-likelihood {worst:.2e} nats")


def main():
    if sys.argv[1] == "synthetic":
        test_synthetic()
    else:
        test_real()
    sys.exit(summary())


if __name__ == "__main__":
    main()
