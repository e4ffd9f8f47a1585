"""The detokenizer's streaming UTF-8 repair against Python's decoder.

Byte-fallback tokens can produce any bytes, and one character can span
several tokens, so `trimlm run` / `chat` stream detokenized bytes through
tokenizer_utf8_push (runtime/tokenizer/tokenizer.c). Its output must equal
bytes.decode("utf-8", errors="replace") of the whole stream, whatever the
split into tokens: one U+FFFD per maximal ill-formed part, as Unicode
recommends and CPython implements. The cases: hand-picked edge cases
(overlong forms, surrogates, past U+10FFFF, truncated sequences, stray
continuation bytes) and random streams biased towards UTF-8 structure, each
split into random chunks.

    test_utf8_stream.py TOOL_TOKENIZE
"""
import os
import random
import sys

from testutil import check, run, scratch_dir, summary, write_bytes

EDGE = [
    b"", b"abc", "héllo wörld €".encode(), "😀 emoji".encode(),
    b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
    b"\xed\x9f\xbf", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xff", b"\xfe\xfe", b"\x80", b"\xbf\x80a", b"\xe2\x82", b"\xe2\x82a", b"\xf0\x9f\x98",
    b"\xf0\x9f\x98\x80\xf0", b"a\xc3", b"\xc3\xa9\xc3", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc",
    b"\xc3\x28", b"\xa0\xa1",
]


def random_stream(rng):
    pieces = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.3:
            pieces.append(bytes([rng.randint(0x20, 0x7e)]))
        elif kind < 0.6:
            cp = rng.choice([rng.randint(0x80, 0x7ff), rng.randint(0x800, 0xffff), rng.randint(0x10000, 0x10ffff)])
            if 0xd800 <= cp <= 0xdfff:
                cp = 0x41
            b = chr(cp).encode()
            if rng.random() < 0.3:
                b = b[:rng.randint(1, len(b))]          # truncated
            pieces.append(b)
        else:
            pieces.append(bytes([rng.choice([0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef,
                                             0xf0, 0xf4, 0xf5, 0xff, rng.randint(0x80, 0xff)])]))
    return b"".join(pieces)


def split(rng, data):
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(4, len(data) - 1)))) if len(data) > 1 else []
    bounds = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def main():
    tool = sys.argv[1]
    rng = random.Random(7)
    streams = [(s, [s]) for s in EDGE] + [(s, [s[i:i + 1] for i in range(len(s))]) for s in EDGE]
    for _ in range(3000):
        data = random_stream(rng)
        streams.append((data, split(rng, data)))
    lines = [" ".join(chunk.hex() or "" for chunk in chunks if chunk) for _, chunks in streams]
    path = os.path.join(scratch_dir("utf8_stream"), "streams.txt")
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    rc, out, err = run([tool, "--utf8-stream", path], timeout=60)
    check("tool ran", rc == 0, err)
    got = out.split("\n")
    bad = []
    for i, (data, _) in enumerate(streams):
        want = data.decode("utf-8", errors="replace").encode()
        have = bytes.fromhex(got[i]) if i < len(got) else None
        if have != want:
            bad.append(f"{data.hex()} split {lines[i]!r}: got {have!r}, want {want!r}")
    check(f"{len(streams)} streams repaired as Python's decoder does (edge cases byte by byte "
          "and whole, random splits)", not bad, "; ".join(bad[:5]))
    return summary()


if __name__ == "__main__":
    sys.exit(main())
