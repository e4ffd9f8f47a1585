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
import subprocess
import sys

TRIMLM = os.environ["TRIMLM"]
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "bench")
SKIP = 77

failures = []
passes = 0

# the synthetic model (tests/py/synth_gguf.py defaults)
N_LAYER, N_HEAD_KV, HEAD_DIM = 2, 2, 16
JSON_FIELDS = ("test", "threads", "n_prompt", "n_gen", "tokens_per_s", "stddev", "reps",
               "samples_ts", "model", "model_bytes", "n_params", "isa", "peak_rss_bytes",
               "load_seconds", "kv_bytes_per_token", "warmup")


def run(args, timeout=300):
    p = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def check(name, ok, detail=""):
    global passes
    if ok:
        passes += 1
        print(f"ok   {name}")
    else:
        failures.append(name)
        print(f"FAIL {name}: {detail}")


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
        check(f"{name}: KV cache bytes per token", r["kv_bytes_per_token"] ==
              2 * N_LAYER * N_HEAD_KV * HEAD_DIM * 4, repr(r))
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
    lines = [l for l in err.splitlines() if l.strip()]
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
    test_membw(sys.argv[1])
    print(f"{passes} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
