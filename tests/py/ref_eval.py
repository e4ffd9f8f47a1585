"""Independent references for `trimlm eval`, shared by the test scripts:

- gguf_bpe_encoder(path): a Hugging Face `tokenizers` byte-level BPE built
  from a GGUF's own vocabulary and merges (not trimlm's tokenizer);
- reference_ppl(): llama.cpp's `llama-perplexity` procedure (tools/perplexity)
  run on the numpy forward pass of ref_llama.py;
- mc_choice_lls(): lm-evaluation-harness's multiple-choice log-likelihoods on
  the same forward pass (used by tests/test_eval_mc.py and bench/mc-reference).

The procedure: chunk i = tokens[i*ctx:(i+1)*ctx] with its first token
replaced by BOS when the model adds it; fresh KV cache; score positions
j = ctx/2 .. ctx-2 with -log softmax(logits[j])[tok[j+1]]; ppl = exp(mean);
stderr = sqrt(var / (count - 1)) * ppl.
"""
import math

import numpy as np


def gguf_bpe_encoder(path):
    """encode(text) -> token ids, without special tokens."""
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


def reference_ppl(model, tokens, ctx, add_bos, bos, max_chunks=None):
    """(ppl, stderr, tokens scored, chunks) of the numpy model."""
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


def log_softmax_rows(logits):
    """log softmax of each row, float64."""
    logits = logits.astype(np.float64)
    m = logits.max(axis=-1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))


def _fork(session):
    """A copy of a ref_llama session that can go on without changing the original."""
    twin = session.m.session()
    twin.pos = session.pos
    twin.k = list(session.k)
    twin.v = list(session.v)
    return twin


def mc_choice_lls(model, encode, context, conts, bos=None):
    """Per continuation: (sum of log p of its tokens, their count), the
    harness's definition: the sequence is [bos] + encode(context + cont), the
    scored tokens those after its common prefix with [bos] + encode(context),
    at least one and never the first. The prefix that every sequence shares
    runs once; each continuation goes on from a fork of it."""
    head = [] if bos is None else [bos]
    ctx_tok = head + encode(context)
    seqs = [head + encode(context + cont) for cont in conts]
    starts = []
    for seq in seqs:
        start = 0
        while start < len(ctx_tok) and start < len(seq) and ctx_tok[start] == seq[start]:
            start += 1
        starts.append(max(1, min(start, len(seq) - 1)))
    shared = min(len(s) for s in seqs) - 1
    for seq in seqs[1:]:
        k = 0
        while k < shared and seq[k] == seqs[0][k]:
            k += 1
        shared = k
    shared = max(shared, 1)
    first = min(shared, min(starts))                       # rows from first-1 on are needed
    base = model.session()
    if first - 1 > 0:
        base.forward(seqs[0][:first - 1], want_logits=False)
    shared_lp = log_softmax_rows(base.forward(seqs[0][first - 1:shared]))   # rows first-1..shared-1
    out = []
    for seq, start in zip(seqs, starts):
        rows = shared_lp
        if len(seq) - 1 > shared:
            rows = np.concatenate([shared_lp, log_softmax_rows(_fork(base).forward(seq[shared:-1]))])
        # rows[r] is position first-1+r and predicts seq[first+r]
        out.append((float(sum(rows[j - first, seq[j]] for j in range(start, len(seq)))),
                    len(seq) - start))
    return out, seqs
