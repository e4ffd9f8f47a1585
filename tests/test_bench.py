"""`trimlm bench` and `trimlm-membw` on a tiny synthetic model.

  test_bench.py MEMBW_BINARY

Checks that every output format is well-formed and carries the fields that
bench/compare-llamacpp reads, that the figures are plausible (tokens/s > 0,
stddev >= 0, model bytes = n_params x 4 for the f32 path), that nothing is
written to stderr when it is not a terminal, and that bad flags exit 2 with
one line naming the flag.
"""
import csv
import io
import json
import os
import sys

from testutil import check, stderr_lines, summary
import testutil

TRIMLM = os.environ["TRIMLM"]
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "bench")
SKIP = 77

# the synthetic model (tests/py/synth_gguf.py defaults)
N_LAYER, N_HEAD_KV, HEAD_DIM = 2, 2, 16
JSON_FIELDS = ("test", "threads", "n_prompt", "n_gen", "tokens_per_s", "stddev", "reps",
               "samples_ts", "model", "model_bytes", "n_params", "isa", "peak_rss_bytes",
               "load_seconds", "kv_bytes_per_token", "warmup")


def run(args, timeout=300):
    return testutil.run(args, timeout)


# --------------------------------------------------------------- formats

def test_json(model):
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "16", "-n", "8", "-r", "2", "-t", "1",
                        "-o", "json"])
    check("json: exit 0, stderr empty off a terminal", rc == 0 and err == "", f"rc={rc} err={err!r}")
    try:
        rows = json.loads(out)
    except ValueError as e:
        check("json: parses", False, f"{e}: {out[:300]!r}")
        return
    check("json: a list of two tests", isinstance(rows, list) and len(rows) == 2, repr(rows)[:300])
    if not isinstance(rows, list) or len(rows) != 2:
        return
    check("json: tests pp16 then tg8", [r.get("test") for r in rows] == ["pp16", "tg8"],
          repr([r.get("test") for r in rows]))
    for r in rows:
        name = f"json {r.get('test')}"
        missing = [f for f in JSON_FIELDS if f not in r]
        check(f"{name}: has every field", not missing, f"missing {missing}")
        if missing:
            continue
        check(f"{name}: tokens_per_s > 0, stddev >= 0",
              r["tokens_per_s"] > 0 and r["stddev"] >= 0, repr(r))
        check(f"{name}: 2 reps, 2 samples, 1 thread",
              r["reps"] == 2 and len(r["samples_ts"]) == 2 and r["threads"] == 1, repr(r))
        mean = sum(r["samples_ts"]) / 2
        check(f"{name}: tokens_per_s is the mean of the samples",
              abs(mean - r["tokens_per_s"]) <= 1e-6 * mean, repr(r))
        check(f"{name}: model bytes = n_params x 4 (f32)",
              r["n_params"] > 0 and r["model_bytes"] == 4 * r["n_params"], repr(r))
        check(f"{name}: KV cache bytes per token (f16 by default)", r["kv_bytes_per_token"] ==
              2 * N_LAYER * N_HEAD_KV * HEAD_DIM * 2 and r["kv_type"] == "f16", repr(r))
        check(f"{name}: peak RSS covers the weights",
              r["peak_rss_bytes"] >= r["model_bytes"], repr(r))
    check("json: n_prompt / n_gen", (rows[0]["n_prompt"], rows[0]["n_gen"], rows[1]["n_prompt"],
                                     rows[1]["n_gen"]) == (16, 0, 0, 8), repr(rows))


def test_md(model):
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "16", "-n", "8", "-r", "2", "-t", "1"])
    lines = out.splitlines()
    table = [l for l in lines if l.startswith("|")]
    ok = rc == 0 and err == "" and len(table) == 4
    check("md: header, separator and two rows", ok, f"rc={rc} err={err!r} out={out!r}")
    if not ok:
        return
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in table]
    check("md: every row has 7 cells", all(len(c) == 7 for c in cells), repr(cells))
    check("md: header names the columns", cells[0] == ["model", "size", "params", "isa", "threads",
                                                       "test", "t/s"], repr(cells[0]))
    check("md: separator row", all(set(c) <= set("-: ") and c for c in cells[1]), repr(cells[1]))
    check("md: tests and mean ± stddev", [c[5] for c in cells[2:]] == ["pp16", "tg8"]
          and all("±" in c[6] for c in cells[2:]), repr(cells[2:]))
    check("md: load time, peak RSS and KV bytes after the table",
          any("peak RSS" in l and "model load" in l and "bytes/token" in l for l in lines), out)


def test_csv(model):
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "16", "-n", "0", "-r", "1",
                        "-t", "1,2", "--warmup", "0", "-o", "csv"])
    check("csv: exit 0", rc == 0 and err == "", f"rc={rc} err={err!r}")
    rows = list(csv.DictReader(io.StringIO(out)))
    check("csv: one pp row per thread count, no tg (-n 0)",
          [(r["test"], r["threads"]) for r in rows] == [("pp16", "1"), ("pp16", "2")], out)
    for r in rows:
        check(f"csv t={r['threads']}: numbers parse",
              float(r["tokens_per_s"]) > 0 and float(r["stddev"]) == 0 and r["reps"] == "1"
              and int(r["model_bytes"]) == 4 * int(r["n_params"]), repr(r))
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "4,8", "-n", "2", "-r", "1", "-o", "csv"])
    check("csv: -p list", rc == 0 and [r["test"] for r in csv.DictReader(io.StringIO(out))]
          == ["pp4", "pp8", "tg2"], f"rc={rc} {out!r} {err!r}")


# ---------------------------------------------------------------- errors

def expect_usage_error(name, args, must_contain):
    rc, out, err = run([TRIMLM, "bench"] + args)
    lines = stderr_lines(err)
    ok = rc == 2 and len(lines) == 1 and lines[0].startswith("trimlm bench: ") and \
        all(s in lines[0] for s in must_contain) and out == ""
    check(f"usage error: {name}", ok, f"rc={rc} stderr={err!r} stdout={out[:200]!r}")


def test_errors(model):
    expect_usage_error("no model", ["-p", "16"], ["no model"])
    expect_usage_error("-t 0", ["-m", model, "-t", "0"], ["'0'", "-t"])
    expect_usage_error("-t 1,,2", ["-m", model, "-t", "1,,2"], ["'1,,2'", "-t"])
    expect_usage_error("-t 1,", ["-m", model, "--threads=1,"], ["'1,'", "--threads"])
    expect_usage_error("-t abc", ["-m", model, "-t", "abc"], ["'abc'", "-t"])
    expect_usage_error("-p -1", ["-m", model, "-p", "-1"], ["'-1'", "-p"])
    expect_usage_error("-r 0", ["-m", model, "-r", "0"], ["'0'", "-r"])
    expect_usage_error("--warmup x", ["-m", model, "--warmup", "x"], ["'x'", "--warmup"])
    expect_usage_error("-o xml", ["-m", model, "-o", "xml"], ["'xml'", "-o", "md, json or csv"])
    expect_usage_error("-o without value", ["-m", model, "-o"], ["missing value", "-o"])
    expect_usage_error("unknown option", ["-m", model, "--frobnicate"], ["--frobnicate"])
    expect_usage_error("nothing to measure", ["-m", model, "-p", "0", "-n", "0"], ["nothing"])
    expect_usage_error("a 17-entry list", ["-m", model, "-t", ",".join(["1"] * 17)], ["at most 16"])
    rc, out, err = run([TRIMLM, "bench", "-m", os.path.join(OUT, "no-such-model.gguf")])
    check("missing model file: exit 1, one line naming it",
          rc == 1 and len(err.splitlines()) == 1 and "no-such-model.gguf" in err, f"rc={rc} {err!r}")
    rc, out, err = run([TRIMLM, "bench", "--help"])
    check("--help", rc == 0 and out.startswith("usage: trimlm bench") and err == "", f"rc={rc}")


# ------------------------------------------- -pg, -d, TTFT, KV bytes, --compare

NEW_FIELDS = ("n_depth", "ttft_ms", "kv_bytes", "kv_type")
KV_F16_BYTES_PER_TOKEN = 2 * N_LAYER * N_HEAD_KV * HEAD_DIM * 2


def test_pg_depth(model):
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "8", "-n", "4", "-pg", "8,4", "-d", "0,32",
                        "-r", "2", "-t", "1", "-o", "json"])
    check("-pg -d: exit 0, quiet", rc == 0 and err == "", f"rc={rc} err={err!r}")
    try:
        rows = json.loads(out)
    except ValueError as e:
        check("-pg -d: parses", False, f"{e}: {out[:300]!r}")
        return
    names = [r.get("test") for r in rows]
    check("-pg -d: tests per depth: pp, tg, pg", names == ["pp8", "tg4", "pp8+tg4", "pp8 @ d32",
                                                             "tg4 @ d32", "pp8+tg4 @ d32"], repr(names))
    for r in rows:
        name = f"-pg -d {r.get('test')}"
        missing = [f for f in JSON_FIELDS + NEW_FIELDS if f not in r]
        check(f"{name}: has every field", not missing, f"missing {missing}")
        if missing:
            continue
        tokens = r["n_prompt"] + r["n_gen"]
        check(f"{name}: KV bytes at the tested context = bytes/token x (depth + tokens)",
              r["kv_bytes"] == KV_F16_BYTES_PER_TOKEN * (r["n_depth"] + tokens), repr(r))
        check(f"{name}: tokens/s > 0, time to first token > 0 and within the run",
              r["tokens_per_s"] > 0 and 0 < r["ttft_ms"] <= 1e3 * tokens / min(r["samples_ts"]) * 1.001,
              repr(r))
    pg = [r for r in rows if r["test"].startswith("pp8+tg4")]
    check("-pg 8,4: n_prompt 8, n_gen 4; depth 0 then 32",
          [(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in pg] == [(8, 4, 0), (8, 4, 32)], repr(pg))
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "8", "-n", "0", "-d", "16", "-r", "1",
                        "-t", "1", "-o", "csv"])
    rows = list(csv.DictReader(io.StringIO(out))) if rc == 0 else []
    check("csv: n_depth, ttft_ms and kv_bytes columns",
          len(rows) == 1 and rows[0]["test"] == "pp8 @ d16" and rows[0]["n_depth"] == "16"
          and float(rows[0]["ttft_ms"]) > 0 and int(rows[0]["kv_bytes"]) == KV_F16_BYTES_PER_TOKEN * 24,
          f"rc={rc} {out!r} {err!r}")
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "8", "-n", "4", "-r", "1", "-t", "1"])
    check("md: time to first token and KV cache at the tested context",
          rc == 0 and any(l.startswith("time to first token:") and "pp8" in l for l in out.splitlines())
          and "KV cache at the tested context" in out, repr(out))
    # the synthetic model's context is 256 tokens
    rc, out, err = run([TRIMLM, "bench", "-m", model, "-p", "16", "-n", "0", "-d", "250", "-r", "1"])
    lines = stderr_lines(err)
    check("-d beyond the model's context: exit 1, one line naming -d and the sizes",
          rc == 1 and len(lines) == 1 and "-d 250" in lines[0] and "266" in lines[0] and "256" in lines[0]
          and out == "", f"rc={rc} {err!r} {out!r}")
    expect_usage_error("-pg with one number", ["-m", model, "-pg", "8"], ["-pg", "P,N"])
    expect_usage_error("-d -1", ["-m", model, "-d", "-1"], ["'-1'", "-d"])


def test_compare(model, model_b):
    rc, out, err = run([TRIMLM, "bench", "-m", model, "--compare", model_b, "-p", "8", "-n", "4",
                        "-r", "3", "-t", "1", "-o", "json"])
    check("--compare: exit 0, quiet", rc == 0 and err == "", f"rc={rc} err={err!r}")
    try:
        rows = json.loads(out)
    except ValueError as e:
        check("--compare: parses", False, f"{e}: {out[:300]!r}")
        return
    a = [r for r in rows if r.get("role") == "A"]
    b = [r for r in rows if r.get("role") == "B"]
    q = [r for r in rows if r.get("role") == "B/A"]
    check("--compare: rows for A, for B, and B/A ratio rows per test",
          [r["test"] for r in a] == ["pp8", "tg4"] and [r["test"] for r in b] == ["pp8", "tg4"]
          and [r["test"] for r in q] == ["pp8", "tg4"] and len(rows) == 6, repr(rows)[:400])
    check("--compare: A and B name their models",
          all(r["model_path"] == model for r in a) and all(r["model_path"] == model_b for r in b),
          repr(rows)[:400])
    for r in q:
        ra = next(x for x in a if x["test"] == r["test"])
        rb = next(x for x in b if x["test"] == r["test"])
        per_run = [y / x for x, y in zip(ra["samples_ts"], rb["samples_ts"])]
        mean = sum(per_run) / len(per_run)
        check(f"--compare {r['test']}: ratio = mean of the per-run B/A, with spread",
              abs(r["ratio"] - mean) <= 1e-9 * mean and r["ratio_stddev"] >= 0
              and r["ratio_min"] <= r["ratio"] <= r["ratio_max"] and r["reps"] == 3
              and r["tokens_per_s_a"] == ra["tokens_per_s"] and r["tokens_per_s_b"] == rb["tokens_per_s"],
              f"{r} per-run {per_run}")
    rc, out, err = run([TRIMLM, "bench", "-m", model, "--compare", model_b, "-p", "8", "-n", "0",
                        "-r", "2", "-t", "1"])
    lines = out.splitlines()
    ratio_table = [l for l in lines if l.startswith("| pp8 |")]
    check("--compare md: a B/A table", rc == 0 and any("B/A" in l for l in lines)
          and len(ratio_table) == 1 and "±" in ratio_table[0], repr(out))
    rc, out, err = run([TRIMLM, "bench", "-m", model, "--compare", model_b, "-p", "8", "-n", "0",
                        "-r", "2", "-t", "1", "-o", "csv"])
    rows = list(csv.DictReader(io.StringIO(out))) if rc == 0 else []
    check("--compare csv: A, B and B/A rows", [r["role"] for r in rows] == ["A", "B", "B/A"]
          and float(rows[2]["ratio"]) > 0, f"rc={rc} {out!r}")


# ----------------------------------------------------------------- membw

def test_membw(membw):
    for extra, huge in (([], True), (["--small-pages"], False)):
        rc, out, err = run([membw, "--size-mib", "64", "--passes", "2", "-t", "1,2"] + extra)
        try:
            doc = json.loads(out)
            res = doc["results"]
            ok = rc == 0 and doc["buffer_bytes"] == 64 << 20 and doc["huge_pages_requested"] is huge \
                and [r["threads"] for r in res] == [1, 2] \
                and all(r["best_gb_per_s"] >= r["median_gb_per_s"] >= r["worst_gb_per_s"] > 0 for r in res)
        except (ValueError, KeyError, TypeError) as e:
            ok, err = False, f"{e} {err}"
        check(f"membw {' '.join(extra)}: JSON with best >= median >= worst > 0 per thread count", ok,
              f"rc={rc} out={out!r} err={err!r}")
    rc, out, err = run([membw, "--size-mib", "1"])
    check("membw: a too-small buffer is a usage error", rc == 2 and "--size-mib" in err,
          f"rc={rc} {err!r}")


def main():
    try:
        import synth_gguf
    except ImportError as e:
        print(f"skipped: the synthetic model helpers are not available ({e})")
        sys.exit(SKIP)
    os.makedirs(OUT, exist_ok=True)
    model = os.path.join(OUT, "bench-synthetic.gguf")
    synth_gguf.write_gguf(model, n_vocab=320, n_embd=64, n_layer=N_LAYER, n_head=4,
                          n_head_kv=N_HEAD_KV, n_ff=96, ctx=256, seed=3)
    test_json(model)
    test_md(model)
    test_csv(model)
    test_errors(model)
    test_pg_depth(model)
    model_b = os.path.join(OUT, "bench-synthetic-q8_0.gguf")
    synth_gguf.write_gguf(model_b, n_vocab=320, n_embd=64, n_layer=N_LAYER, n_head=4,
                          n_head_kv=N_HEAD_KV, n_ff=96, ctx=256, seed=3, qtype="q8_0")
    test_compare(model, model_b)
    test_membw(sys.argv[1])
    sys.exit(summary())


if __name__ == "__main__":
    main()
