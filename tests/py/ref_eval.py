"""Independent references for `trimlm eval`, shared by the test scripts:

- gguf_bpe_encoder(path): a Hugging Face `tokenizers` byte-level BPE built
  from a GGUF's own vocabulary and merges (not trimlm's tokenizer);
- reference_ppl(): llama.cpp's `llama-perplexity` procedure (tools/perplexity)
  run on the numpy forward pass of ref_llama.py.

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
