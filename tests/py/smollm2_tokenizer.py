"""The reference tokenizer of the default model (SmolLM2): Hugging Face
`tokenizers` built from the GGUF's own tokens, merges and token types
(gguf.GGUFReader), independent of trimlm's tokenizer."""
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers


def gguf_strings(field):
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def smollm2_reference(path):
    """(tokenizer, token strings) for the GGUF at path."""
    from gguf import GGUFReader
    r = GGUFReader(path)
    tokens = gguf_strings(r.fields["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in gguf_strings(r.fields["tokenizer.ggml.merges"])]
    tt = r.fields["tokenizer.ggml.token_type"]
    types = [int(tt.parts[i][0]) for i in tt.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    ref = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return ref, tokens
