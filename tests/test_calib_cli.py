"""`trimlm score` on a tiny synthetic model: output formats, the SVG plot,
and bad input.

  - --format json: exactly a list of {"layer", "kind", "score"}, 3 per layer
    in layer order (attn, mlp, block), scores equal to the numpy reference
    (ref_llama.calibration_stats) within 1e-5;
  - --format csv / table: the same scores, the attention ranks a permutation
    of 1..n_layer ordered like the scores, the settings in the footer;
  - `-m SRC` and the positional SRC agree; 1 and 2 threads agree;
  - --plot: a well-formed SVG (xml.etree) with a title naming the model,
    three series and a legend, written without leaving a temporary file;
  - bad input: a missing or empty --calib file, a one-token text, a
    directory, --calib-seq 1, --calib-tokens 1, --format xml, no model, a
    missing model, a --plot in a missing directory: exit code 1 (failure,
    "trimlm: ...") or 2 (usage, "trimlm score: ..."), one line naming the
    input; invalid UTF-8 in the text is accepted (replaced as the tokenizer does).
"""

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import ref_llama
import synth_gguf
from testutil import check, scratch_dir, summary

TRIMLM = os.environ["TRIMLM"]
SCORE_TOL = 1e-5
KINDS = ("attn", "mlp", "block")


def score(*args, timeout=120):
    return subprocess.run([TRIMLM, "score", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def main():
    out = scratch_dir("calib_cli")
    model = os.path.join(out, "m.gguf")
    synth_gguf.write_gguf(model, arch="llama", n_layer=4, seed=31)
    text = os.path.join(out, "text.txt")
    with open(text, "w") as f:
        for i in range(60):
            f.write(f"the state of the school was known in the city {i} . it has had a new time\n")
    n_layer, n_tokens, seq = 4, 150, 32
    common = ["--calib", text, "--calib-tokens", str(n_tokens), "--calib-seq", str(seq)]

    # ------------------------------------------------------------ json
    r = score(model, *common, "--format", "json", "-t", "2")
    check(f"json: exit 0 ({r.stderr.strip()})", r.returncode == 0)
    data = json.loads(r.stdout)
    check("json: a list of 3 x n_layer", isinstance(data, list) and len(data) == 3 * n_layer)
    check("json: keys layer, kind, score", all(set(e) == {"layer", "kind", "score"} for e in data))
    check("json: layer order, attn/mlp/block",
          [(e["layer"], e["kind"]) for e in data] == [(l, k) for l in range(n_layer) for k in KINDS])
    check("json: settings on stderr, not in the list", "calibration:" in r.stderr)
    got = {k: np.array([e["score"] for e in data if e["kind"] == k]) for k in KINDS}

    # the reference over the same sequences: the text tokenised by the
    # library (through ctypes would need the .so; the tokenizer has its own
    # reference tests), cut as the pass cuts it
    import ctypes
    lib = ctypes.CDLL(os.path.join(os.environ["TLM_BUILD"], "libtrimlm.so"))
    lib.tlm_model_load.restype = ctypes.c_void_p
    lib.tlm_model_load.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.tlm_tokenize.restype = ctypes.c_int32
    lib.tlm_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_bool,
                                 ctypes.c_bool, ctypes.POINTER(ctypes.c_int32), ctypes.c_int32,
                                 ctypes.c_void_p]
    lib.tlm_model_free.argtypes = [ctypes.c_void_p]
    m = lib.tlm_model_load(model.encode(), None)
    raw = open(text, "rb").read()
    buf = (ctypes.c_int32 * (len(raw) + 1))()
    n = lib.tlm_tokenize(m, raw, len(raw), False, False, buf, len(raw) + 1, None)
    lib.tlm_model_free(m)
    seqs = ref_llama.calibration_sequences(list(buf[:n]), n_tokens, seq)
    want = ref_llama.calibration_stats(ref_llama.load(model), seqs)
    err = max(float(np.abs(got[k] - want[k]).max()) for k in KINDS)
    check(f"json: scores vs numpy reference, max abs err {err:.2e}", err < SCORE_TOL)

    r1 = score("-m", model, *common, "--format", "json", "-t", "1")
    one = {k: np.array([e["score"] for e in json.loads(r1.stdout) if e["kind"] == k]) for k in KINDS}
    d = max(float(np.abs(one[k] - got[k]).max()) for k in KINDS)
    check(f"-m and 1 thread agree with SRC and 2 threads ({d:.1e})", r1.returncode == 0 and d <= 1e-6)

    # ------------------------------------------------------------- csv
    r = score(model, *common, "--format", "csv")
    check("csv: exit 0", r.returncode == 0)
    rows = [l for l in r.stdout.splitlines() if not l.startswith("#")]
    footer = [l for l in r.stdout.splitlines() if l.startswith("#")]
    table = list(csv.DictReader(io.StringIO("\n".join(rows))))
    check("csv: header", list(table[0].keys()) == ["layer", "attn", "attn_rank", "mlp", "block"])
    check("csv: one row per layer", len(table) == n_layer)
    csv_attn = np.array([float(t["attn"]) for t in table])
    check("csv: the same attention scores", float(np.abs(csv_attn - got["attn"]).max()) < 1e-7)
    ranks = [int(t["attn_rank"]) for t in table]
    check("csv: ranks are 1..n_layer", sorted(ranks) == list(range(1, n_layer + 1)))
    check("csv: rank 1 = lowest attention score",
          list(np.argsort(csv_attn, kind="stable") + 1) == [ranks.index(k) + 1 for k in range(1, n_layer + 1)])
    check("csv: settings in the footer",
          any("calibration:" in l and f"{n_tokens} tokens" in l for l in footer))

    # ----------------------------------------------------------- table
    r = score(model, *common)
    lines = r.stdout.splitlines()
    body = [l.split() for l in lines if l[:5].strip().isdigit()]
    check("table: one line per layer", r.returncode == 0 and len(body) == n_layer)
    check("table: attention score and rank per layer",
          all(abs(float(b[1]) - got["attn"][i]) < 1e-6 and int(b[2]) == ranks[i]
              for i, b in enumerate(body)))
    check("table: settings line",
          any(l.startswith("calibration:") and "sequences of <= 32" in l for l in lines))

    # ------------------------------------------------------------ plot
    svg = os.path.join(out, "scores.svg")
    if os.path.exists(svg):
        os.remove(svg)
    r = score(model, *common, "--format", "json", "--plot", svg)
    check(f"plot: written ({r.stderr.strip()})", r.returncode == 0 and os.path.exists(svg))
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    check("plot: an <svg> root", root.tag == ns + "svg")
    texts = ["".join(t.itertext()) for t in root.iter(ns + "text")]
    check("plot: the title names the model", any("synthetic llama" in t for t in texts))
    check("plot: a legend with the three kinds",
          all(any(t == name for t in texts) for name in ("attention", "MLP", "block")))
    check("plot: three lines", len(list(root.iter(ns + "polyline"))) == 3)
    check("plot: an x-axis label", any(t == "layer" for t in texts))
    check("plot: no temporary file left", not [f for f in os.listdir(out) if ".partial-" in f or ".tmp" in f])

    # ------------------------------------------------- .tlm sources
    # pruned: the removed sublayers are null; layer 0 (upstream of them) is
    # unchanged. int8: close to the f32 scores.
    pruned = os.path.join(out, "pruned.tlm")
    r = subprocess.run([TRIMLM, "convert", model, "-o", pruned, "--type", "f32", "--no-calib",
                        "--drop-list", "attn:1 mlp:2"], stderr=subprocess.PIPE, text=True)
    check(f"convert a pruned .tlm ({r.stderr.strip()})", r.returncode == 0)
    r = score(pruned, *common, "--format", "json")
    pj = {(e["layer"], e["kind"]): e["score"] for e in json.loads(r.stdout or "[]")}
    check("pruned .tlm: removed sublayers score null",
          r.returncode == 0 and pj.get((1, "attn"), 0) is None and pj.get((2, "mlp"), 0) is None)
    check("pruned .tlm: the others are scored",
          all(pj.get((l, k)) is not None for l in range(n_layer) for k in KINDS
              if (l, k) not in ((1, "attn"), (2, "mlp"))))
    d0 = max(abs(pj.get((0, k), 9) - got[k][0]) for k in KINDS)
    check(f"pruned .tlm: layer 0 unchanged ({d0:.1e})", d0 < 1e-6)
    r = score(pruned, *common)
    row1 = next((l.split() for l in r.stdout.splitlines() if l.split()[:1] == ["1"]), [])
    check(f"pruned .tlm: the table shows '-' ({row1})", row1[1:3] == ["-", "-"])
    q8 = os.path.join(out, "q8.tlm")
    r = subprocess.run([TRIMLM, "convert", model, "-o", q8, "--type", "int8", "--no-calib"],
                       stderr=subprocess.PIPE, text=True)
    r = score(q8, *common, "--format", "json")
    qd = [e["score"] for e in json.loads(r.stdout or "[]")]
    dq = max((abs(a - b) for a, b in zip(qd, [e["score"] for e in data])), default=9)
    check(f"int8 .tlm: scores within 0.02 of the f32 model's ({dq:.1e})",
          r.returncode == 0 and len(qd) == 3 * n_layer and dq < 0.02)

    # -------------------------------------------------------- bad input
    empty = os.path.join(out, "empty.txt")
    open(empty, "w").close()
    one_tok = os.path.join(out, "one.txt")
    with open(one_tok, "w") as f:
        f.write("a")
    bad_utf8 = os.path.join(out, "bad_utf8.txt")
    with open(bad_utf8, "wb") as f:
        f.write(b"the \xff\xfe city \xc3 was known at the time \xe2\x82 .\n" * 20)
    missing = os.path.join(out, "no-such-file.txt")
    cases = [
        (["--calib", missing], 1, ["trimlm: calibration text", missing]),
        (["--calib", empty], 1, ["trimlm: calibration text", empty, "empty"]),
        (["--calib", one_tok], 1, ["trimlm: calibration text", one_tok, "at least 2"]),
        (["--calib", out], 1, ["trimlm: calibration text", out]),
        (["--calib-seq", "1"], 2, ["trimlm score:", "--calib-seq"]),
        (["--calib-tokens", "1"], 2, ["trimlm score:", "--calib-tokens"]),
        (["--format", "xml"], 2, ["trimlm score:", "--format", "xml"]),
        (["--plot", os.path.join(out, "no-dir", "p.svg")], 1, ["trimlm:", "no-dir"]),
        (["--bogus"], 2, ["trimlm score:", "--bogus"]),
    ]
    for args, rc, needles in cases:
        r = score(model, "--calib-tokens", "40", *args) if "--calib-tokens" not in args else \
            score(model, *args)
        msg = r.stderr.strip()
        ok = r.returncode == rc and all(s in msg for s in needles) and len(msg.splitlines()) == 1
        check(f"{' '.join(args)}: exit {r.returncode} (want {rc}), message {msg!r}", ok)
    r = score()
    check("no model: exit 2", r.returncode == 2 and "trimlm score: no model" in r.stderr)
    r = score(os.path.join(out, "missing.gguf"))
    check("missing model: exit 1 naming it", r.returncode == 1 and "missing.gguf" in r.stderr)
    r = score(model, "--calib", bad_utf8, "--calib-tokens", "64", "--calib-seq", "16", "--format", "json")
    check(f"invalid UTF-8 text: accepted ({r.stderr.strip()})",
          r.returncode == 0 and len(json.loads(r.stdout)) == 3 * n_layer)
    r = score("--help")
    check("--help", r.returncode == 0 and "usage: trimlm score" in r.stdout)

    sys.exit(summary())


if __name__ == "__main__":
    main()
