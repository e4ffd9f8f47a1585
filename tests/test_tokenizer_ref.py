#!/usr/bin/env python3
"""Tokenizer conformance against Hugging Face `tokenizers` (the reference).

    test_tokenizer_ref.py MODE TOOL CORPUS

MODE
  smollm2  the real SmolLM2 vocabulary: a reference tokenizer is built in
           Python from the GGUF's tokens and merges (gguf.GGUFReader); ids of
           every corpus record must match for the GGUF loader and for the
           tokenizer.json the reference saves; decoding must give back the
           input bytes; 100 KB of WikiText-2 must tokenize identically and
           fast.
  spm      a SentencePiece-style BPE (byte fallback, U+2581 spaces) trained
           here on WikiText-2 lines, saved as tokenizer.json and written as a
           GGUF "llama" vocabulary whose scores reproduce the merge order.
  llama3   byte-level BPEs trained here with the Llama 3 and the Qwen2 split
           regex, as tokenizer.json and as GGUF "gpt2" vocabularies with
           tokenizer.ggml.pre "llama-bpe" / "qwen2".

TOOL is tool_tokenize; CORPUS the escaped corpus (one record per line, \\n \\t
\\r \\\\ \\xHH escapes). Invalid UTF-8 records are compared with the reference
on bytes.decode('utf-8', 'replace').
"""
import os
import subprocess
import sys
import time

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

from smollm2_tokenizer import smollm2_reference
from testutil import real_model_path

GPT2_RE = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
            r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
META = "\u2581"

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


# ------------------------------------------------------------------ corpus

def unescape(b):
    out = bytearray()
    i = 0
    while i < len(b):
        c = b[i]
        if c != 0x5C or i + 1 >= len(b):
            out.append(c)
            i += 1
            continue
        e = b[i + 1]
        if e == ord("n"):
            out.append(10)
        elif e == ord("t"):
            out.append(9)
        elif e == ord("r"):
            out.append(13)
        elif e == ord("x") and i + 3 < len(b) and _ishex(b[i + 2:i + 4]):
            out.append(int(b[i + 2:i + 4], 16))
            i += 2
        else:
            out.append(e)
        i += 2
    return bytes(out)


def _ishex(two):
    return len(two) == 2 and all(chr(x) in "0123456789abcdefABCDEF" for x in two)


def escape(b):
    out = []
    for x in b:
        if x == 0x5C:
            out.append("\\\\")
        elif x == 10:
            out.append("\\n")
        elif x == 13:
            out.append("\\r")
        elif x == 9:
            out.append("\\t")
        elif 0x20 <= x < 0x7F:
            out.append(chr(x))
        else:
            out.append("\\x%02x" % x)
    return "".join(out)


def read_corpus(path):
    raw = open(path, "rb").read().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    return [unescape(r) for r in raw]


def write_corpus(path, records):
    with open(path, "w", encoding="ascii") as f:
        for r in records:
            f.write(escape(r) + "\n")


def wiki_lines(n, skip=0):
    path = os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.valid.raw")
    lines = [l for l in open(path, encoding="utf-8").read().split("\n") if l.strip()]
    return lines[skip:skip + n]


# ------------------------------------------------------------------ running the tool

def run_tool(tool, source_args, corpus_path, extra=()):
    cmd = [tool] + source_args + list(extra) + ["--decode", corpus_path]
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode != 0:
        raise SystemExit("tool failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr.decode()))
    rows = []
    for line in p.stdout.decode().split("\n")[:-1]:
        ids_s, _, hexs = line.partition("\t")
        rows.append(([int(x) for x in ids_s.split()], bytes.fromhex(hexs)))
    return rows


def tool_info(tool, source_args):
    p = subprocess.run([tool] + source_args + ["--info"], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("tool --info failed: " + p.stderr)
    info = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        info[k] = v
    return info


def compare(label, ref, rows, records, special=True, add_bos=False, roundtrip=True):
    """ids from the tool vs the reference, per record; decode round trip."""
    check(len(rows) == len(records), "%s: %d output rows for %d records" % (label, len(rows), len(records)))
    bad = 0
    for i, (rec, (ids, dec)) in enumerate(zip(records, rows)):
        text = rec.decode("utf-8", errors="replace")
        want = ref.encode(text, add_special_tokens=add_bos).ids
        if ids != want:
            bad += 1
            if bad <= 5:
                print("%s: record %d %r\n  ours %s\n  ref  %s" % (label, i, rec[:120], ids[:40], want[:40]))
        if roundtrip:
            try:
                rec.decode("utf-8")
                valid = True
            except UnicodeDecodeError:
                valid = False
            expect = text.encode("utf-8")
            if valid and not add_bos and dec != expect:
                bad += 1
                print("%s: record %d does not round-trip: %r -> %r" % (label, i, rec[:80], dec[:80]))
    check(bad == 0, "%s: %d mismatching records of %d" % (label, bad, len(records)))
    print("%s: %d records compared" % (label, len(records)))


# ------------------------------------------------------------------ SmolLM2

def smollm2(tool, corpus_path):
    path = real_model_path()
    if not os.path.exists(path):
        raise SystemExit("model not found: %s (set TLM_MODEL_PATH)" % path)
    ref, tokens = smollm2_reference(path)

    out = os.environ["TLM_TEST_OUT"]
    records = read_corpus(corpus_path)
    # the corpus, WikiText lines, and one long record (100 KB with newlines)
    wiki = [l.encode("utf-8") for l in wiki_lines(400)]
    text100k = open(os.path.join(os.environ["TLM_EVAL_DATA"], "wikitext2", "wiki.test.raw"),
                    "rb").read()[:100000]
    text100k = text100k[:len(text100k.decode("utf-8", errors="ignore").encode("utf-8"))]
    all_records = records + wiki + [text100k]
    full = os.path.join(out, "tok_smollm2_corpus.txt")
    write_corpus(full, all_records)

    g = ["--gguf", path]
    compare("smollm2 gguf special", ref, run_tool(tool, g, full, ["--special"]), all_records)

    # without parse_special, special text is ordinary text
    ref.encode_special_tokens = True
    compare("smollm2 gguf no-special", ref, run_tool(tool, g, corpus_path), records)
    ref.encode_special_tokens = False

    info = tool_info(tool, g)
    check(info.get("kind") == "byte", "smollm2: kind %s" % info.get("kind"))
    check(info.get("n_vocab") == "49152", "smollm2: n_vocab %s" % info.get("n_vocab"))
    check(info.get("bos") == "1" and info.get("eos") == "2", "smollm2: bos/eos %s/%s" % (info.get("bos"), info.get("eos")))
    check(info.get("add_bos") == "0", "smollm2: add_bos should be false")
    eog = set(int(x) for x in info.get("eog", "").split())
    check({0, 2} <= eog, "smollm2: <|endoftext|> (0) and <|im_end|> (2) must end generation, got %s" % eog)
    check(info.get("special", "").split() == [str(i) for i in range(17)], "smollm2: specials %s" % info.get("special"))

    # the same tokenizer saved as tokenizer.json
    js = os.path.join(out, "tok_smollm2_tokenizer.json")
    ref.save(js)
    compare("smollm2 tokenizer.json", ref, run_tool(tool, ["--hf", js], full, ["--special"]), all_records)

    # the ByteLevel pre-tokenizer's add_prefix_space (a space before every
    # piece that lacks one), on the hand-written corpus
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    js_prefix = os.path.join(out, "tok_smollm2_prefix_tokenizer.json")
    ref.save(js_prefix)
    compare("smollm2 add_prefix_space", ref, run_tool(tool, ["--hf", js_prefix], corpus_path, ["--special"]),
            records, roundtrip=False)

    # speed: 100 KB of WikiText-2 (best of 3)
    raw = os.path.join(out, "tok_wiki100k.txt")
    open(raw, "wb").write(text100k)
    best = 1e9
    for _ in range(3):
        p = subprocess.run([tool] + g + ["--bench", raw], capture_output=True, text=True)
        check(p.returncode == 0, "bench failed: " + p.stderr)
        best = min(best, float(p.stdout.split()[2]))
    print("smollm2: 100 KB tokenized in %.3f s" % best)
    check(best < 1.0, "smollm2: 100 KB took %.3f s" % best)


# ------------------------------------------------------------------ SentencePiece-style

def write_gguf_llama(path, tokens, scores, types, bos, eos, unk):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm(tool, corpus_path):
    out = os.environ["TLM_TEST_OUT"]
    # train with Metaspace splitting (pieces never span a word boundary), as
    # SentencePiece does
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<unk>", "<s>", "</s>"],
                                  limit_alphabet=200, show_progress=False)
    trainer_tok.train_from_iterator(wiki_lines(1500), trainer)
    trained = trainer_tok.get_vocab()

    # Llama 2 layout: <unk> <s> </s>, 256 byte tokens, then the pieces in
    # training order (lower id = higher score)
    pieces = [t for t, _ in sorted(trained.items(), key=lambda kv: kv[1]) if t not in ("<unk>", "<s>", "</s>")]
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + pieces
    vocab = {t: i for i, t in enumerate(tokens)}
    # every split of every piece into two pieces, best piece first: the
    # merges Hugging Face derives from a SentencePiece model, so that merging
    # by rank equals merging by score
    merges = []
    for t in pieces:
        local = [(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab]
        local.sort(key=lambda ab: (vocab[ab[0]], vocab[ab[1]]))
        merges.extend(local)
    ref = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    ref.normalizer = normalizers.Sequence([normalizers.Prepend(META), normalizers.Replace(" ", META)])
    ref.decoder = decoders.Sequence([decoders.Replace(META, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    ref.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    ref.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    js = os.path.join(out, "tok_spm_tokenizer.json")
    ref.save(js)

    records = read_corpus(corpus_path) + [l.encode("utf-8") for l in wiki_lines(300, skip=1500)]
    full = os.path.join(out, "tok_spm_corpus.txt")
    write_corpus(full, records)

    # decoding per token: U+2581 -> ' ', so every record comes back with a
    # leading space (the reference's decoder strips it from the whole text)
    def spm_roundtrip(label, rows):
        bad = 0
        for rec, (ids, dec) in zip(records, rows):
            want = (" " + rec.decode("utf-8", errors="replace")).encode("utf-8") if rec else b""
            body = dec
            if ids and ids[0] == 1:
                body = dec[len(b"<s>"):]
                ids = ids[1:]
            if any(i < 3 for i in ids):
                continue  # each segment after a special token gets its own U+2581
            if body != want:
                bad += 1
                if bad <= 3:
                    print("%s: decode %r -> %r" % (label, rec[:60], body[:60]))
        check(bad == 0, "%s: %d records do not round-trip" % (label, bad))

    rows = run_tool(tool, ["--hf", js], full, ["--special"])
    compare("spm tokenizer.json", ref, rows, records, roundtrip=False)
    spm_roundtrip("spm tokenizer.json", rows)
    compare("spm tokenizer.json +bos", ref, run_tool(tool, ["--hf", js], full, ["--special", "--bos"]),
            records, add_bos=True, roundtrip=False)
    info = tool_info(tool, ["--hf", js])
    check(info.get("kind") == "spm" and info.get("bos") == "1" and info.get("add_bos") == "1",
          "spm tokenizer.json: info %s" % info)

    # the same vocabulary behind a Metaspace pre-tokenizer (newer
    # tokenizer.json files) instead of the Prepend + Replace normalizer
    for scheme in ("always", "first"):
        for split in (True, False):
            ref.normalizer = None
            ref.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme=scheme, split=split)
            js_meta = os.path.join(out, "tok_spm_metaspace_%s_%d.json" % (scheme, split))
            ref.save(js_meta)
            compare("spm metaspace %s split=%s" % (scheme, split), ref,
                    run_tool(tool, ["--hf", js_meta], full, ["--special"]), records, roundtrip=False)
    ref.pre_tokenizer = None
    ref.normalizer = normalizers.Sequence([normalizers.Prepend(META), normalizers.Replace(" ", META)])

    gg = os.path.join(out, "tok_spm.gguf")
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    write_gguf_llama(gg, tokens, scores, types, 1, 2, 0)
    rows = run_tool(tool, ["--gguf", gg], full, ["--special"])
    compare("spm gguf", ref, rows, records, roundtrip=False)
    spm_roundtrip("spm gguf", rows)
    info = tool_info(tool, ["--gguf", gg])
    check(info.get("kind") == "spm" and info.get("add_bos") == "1" and "2" in info.get("eog", "").split(),
          "spm gguf: info %s" % info)


# ------------------------------------------------------------------ byte-level, Llama 3 / Qwen2 regex

def write_gguf_gpt2(path, tokens, merges, types, pre, bos, eos):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def byte_level_split(tool, corpus_path, name, regex, pre):
    out = os.environ["TLM_TEST_OUT"]
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(wiki_lines(1500), trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    js = os.path.join(out, "tok_%s_tokenizer.json" % name)
    tok.save(js)

    records = read_corpus(corpus_path) + [l.encode("utf-8") for l in wiki_lines(300, skip=1500)]
    full = os.path.join(out, "tok_%s_corpus.txt" % name)
    write_corpus(full, records)
    compare("%s tokenizer.json" % name, tok, run_tool(tool, ["--hf", js], full, ["--special"]), records)
    compare("%s tokenizer.json +bos" % name, tok, run_tool(tool, ["--hf", js], full, ["--special", "--bos"]),
            records, add_bos=True, roundtrip=False)
    bos = tok.token_to_id("<|begin_of_text|>")
    info = tool_info(tool, ["--hf", js])
    check(info.get("kind") == "byte" and info.get("bos") == str(bos) and info.get("add_bos") == "1",
          "%s tokenizer.json: info %s" % (name, info))
    eog = set(int(x) for x in info.get("eog", "").split())
    check({tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|eot_id|>")} <= eog,
          "%s: eog %s" % (name, eog))

    # the same vocabulary as GGUF
    import json
    model = json.load(open(js, encoding="utf-8"))["model"]
    vocab = model["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    check(all(vocab[t] == i for i, t in enumerate(tokens)), "%s: vocab ids not dense" % name)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in specials else 1 for t in tokens]
    gg = os.path.join(out, "tok_%s.gguf" % name)
    write_gguf_gpt2(gg, tokens, merges, types, pre, bos, tok.token_to_id("<|end_of_text|>"))
    compare("%s gguf" % name, tok, run_tool(tool, ["--gguf", gg], full, ["--special"]), records)

    # added tokens that swallow the whitespace around them (tokenizer.json only)
    tok.add_tokens([AddedToken("<|tool|>", special=True, lstrip=True, rstrip=True),
                    AddedToken("[[left]]", special=False, lstrip=True),
                    AddedToken("[[right]]", special=False, rstrip=True)])
    js_strip = os.path.join(out, "tok_%s_strip_tokenizer.json" % name)
    tok.save(js_strip)
    strip_records = [b"a <|tool|> b", b"a\n\t<|tool|>\n  b", b"  <|tool|>", b"<|tool|>  ",
                     b"x \xc2\xa0[[left]] y", b"x [[right]]\xe3\x80\x80 y", b"[[left]][[right]] [[left]]",
                     b" <|tool|><|tool|> ", b"\xe2\x80\x83<|tool|>\xe2\x80\x83z"]
    strip_corpus = os.path.join(out, "tok_%s_strip_corpus.txt" % name)
    write_corpus(strip_corpus, strip_records)
    compare("%s lstrip/rstrip" % name, tok, run_tool(tool, ["--hf", js_strip], strip_corpus, ["--special"]),
            strip_records, roundtrip=False)


# ------------------------------------------------------------------ damaged GGUF vocabularies

def gguf_errors(tool):
    """Inconsistent tokenizer metadata must fail with a message naming the file."""
    import gguf
    out = os.environ["TLM_TEST_OUT"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    good = dict(model="gpt2", tokens=chars + ["ab"], types=[1] * 27, merges=["a b"], bos=0)
    cases = [
        ("model", dict(model="bert"), "bert"),
        ("types_len", dict(types=[1] * 5), "disagree"),
        ("bos_range", dict(bos=1000), "outside the vocabulary"),
        ("merge_unknown", dict(merges=["a b", "zz q"]), "not in the vocabulary"),
        ("merge_form", dict(merges=["ab"]), "merge 0"),
        ("no_merges", dict(merges=None), "merges"),
        ("no_tokens", dict(tokens=None), "tokens"),
    ]
    for name, change, needle in cases:
        spec = dict(good, **change)
        path = os.path.join(out, "tok_bad_%s.gguf" % name)
        w = gguf.GGUFWriter(path, "llama")
        w.add_tokenizer_model(spec["model"])
        if spec["tokens"] is not None:
            w.add_token_list(spec["tokens"])
        w.add_token_types(spec["types"])
        if spec["merges"] is not None:
            w.add_token_merges(spec["merges"])
        w.add_bos_token_id(spec["bos"])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        p = subprocess.run([tool, "--gguf", path, "--info"], capture_output=True, text=True)
        check(p.returncode != 0, "bad gguf %s: loaded" % name)
        check(path in p.stderr and needle in p.stderr,
              "bad gguf %s: message %r lacks the path or %r" % (name, p.stderr.strip(), needle))
    print("damaged GGUF vocabularies: %d cases" % len(cases))


# ------------------------------------------------------------------ main

def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    mode, tool, corpus_path = sys.argv[1:]
    t0 = time.time()
    if mode == "smollm2":
        smollm2(tool, corpus_path)
    elif mode == "spm":
        spm(tool, corpus_path)
    elif mode == "llama3":
        byte_level_split(tool, corpus_path, "llama3", LLAMA3_RE, "llama-bpe")
        byte_level_split(tool, corpus_path, "qwen2", QWEN2_RE, "qwen2")
        gguf_errors(tool)
    else:
        raise SystemExit("unknown mode " + mode)
    print("%s: %.1f s" % (mode, time.time() - t0))
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
