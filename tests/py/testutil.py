"""What the end-to-end test scripts share.

- where things are: real_model_path() (the default model), llamacpp_bin()
  (llama.cpp's tools built by bench/compare-llamacpp), scratch_dir(name)
  (a directory under $TLM_TEST_OUT), fresh_dir(path) (emptied first);
- a tally of named checks: check() prints `ok   name` or `FAIL name: detail`
  and records it, summary() prints the counts and gives the exit status;
  fail() ends a script at its first failure instead;
- running programs: run() gives (exit code, stdout, stderr) as text,
  stderr_lines() / one_line() look at what an error printed, info_json() is
  `trimlm info --json`, tool_logits() runs tests/tool_logits.c;
- reading a .tlm file (runtime/io/tlm_format.h): read_tlm_header(),
  read_tlm_tensors();
- numeric references: log_softmax(), round_half_away() (C's roundf);
- write_bytes() for hand-made input files.

numpy is imported only inside the helpers that return arrays, so that the
scripts which need none (test_cli.py, test_pull.py, ...) run on a bare python3.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys

# ------------------------------------------------------------------ paths


def real_model_path():
    """The default model, where `trimlm pull` puts it (or TLM_MODEL_PATH)."""
    if os.environ.get("TLM_MODEL_PATH"):
        return os.environ["TLM_MODEL_PATH"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "trimlm", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def llamacpp_bin():
    """The directory of the llama.cpp tools bench/compare-llamacpp builds
    (TLM_LLAMACPP_BIN, else its cache folder for the pinned version), or None
    when llama-perplexity is not there."""
    d = os.environ.get("TLM_LLAMACPP_BIN")
    if not d:
        script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "bench", "compare-llamacpp")
        with open(script) as f:
            version = re.search(r'^LLAMA_CPP_PYTHON_VERSION = "([^"]+)"', f.read(), re.M).group(1)
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(cache, "trimlm", f"llama.cpp-{version}", "bin")
    return d if os.access(os.path.join(d, "llama-perplexity"), os.X_OK) else None


def scratch_dir(name):
    """$TLM_TEST_OUT/name (or ./name), created if missing."""
    base = os.environ.get("TLM_TEST_OUT") or os.getcwd()
    path = os.path.join(base, name)
    os.makedirs(path, exist_ok=True)
    return path


def fresh_dir(path):
    """path as a new empty directory (whatever was there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


# ------------------------------------------------------------------ checks

failures = []  # names of the failed checks, in order
passes = 0


def check(name, ok, detail=""):
    global passes
    if ok:
        passes += 1
        print(f"ok   {name}")
    else:
        failures.append(name)
        print(f"FAIL {name}: {detail}")


def summary():
    """Prints the tally and the failed checks; returns the exit status."""
    print(f"{passes} passed, {len(failures)} failed")
    for name in failures:
        print("FAILED: " + name)
    return 1 if failures else 0


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------ running tools


def run(cmd, timeout, env=None, stdin=None):
    """(exit code, stdout, stderr) of cmd, output decoded as UTF-8 with bad
    bytes replaced. stdin: a file object, else none (never the terminal's)."""
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env,
                       stdin=stdin if stdin is not None else subprocess.DEVNULL)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def stderr_lines(err):
    """The non-blank lines of an error output."""
    return [line for line in err.splitlines() if line.strip()]


def one_line(err):
    return len(stderr_lines(err)) == 1


def info_json(trimlm, path, *extra):
    """`trimlm info PATH --json` parsed; raises if it fails."""
    rc, out, err = run([trimlm, "info", path, "--json", *extra], timeout=900)
    if rc != 0:
        raise RuntimeError(f"info {path}: {err}")
    return json.loads(out)


def tool_logits(tool, model, tokens, out, mode="prefill", threads=1):
    """The logits tests/tool_logits.c writes for tokens, flat float32
    (len(tokens) x n_vocab in prefill mode)."""
    import numpy as np
    subprocess.run([tool, model, "--tokens", ",".join(map(str, tokens)), "--mode", mode,
                    "-t", str(threads), out], check=True, timeout=300)
    return np.fromfile(out, dtype=np.float32)


def logits_rows_kept(mode, n_tokens):
    """Which rows of tool_logits' output hold logits (a bool per token), from
    its documented schedule and the API's contract, not from its output:
    prefill and decode keep every row; mixed decodes calls of 3, 4, 1, 2, 5,
    1, 2 tokens (repeating), the even-numbered ones with all_logits and the
    odd ones keeping their last row only (tlm_get_logits), the rest NaN."""
    if mode != "mixed":
        return [True] * n_tokens
    chunks = [3, 4, 1, 2, 5, 1, 2]
    kept, done, c = [], 0, 0
    while done < n_tokens:
        k = min(chunks[c % 7], n_tokens - done)
        kept += [True] * k if c % 2 == 0 else [False] * (k - 1) + [True]
        done += k
        c += 1
    return kept


def logits_rows_problem(logits, mode):
    """None when the NaN rows of tool_logits' (n_tokens, n_vocab) output are
    exactly those logits_rows_kept() leaves out, else what is wrong: a NaN in
    a row that must hold logits is a failure, never a row to skip."""
    import numpy as np
    kept = np.array(logits_rows_kept(mode, logits.shape[0]))
    nan = np.isnan(logits)
    bad = np.nonzero(kept & nan.any(axis=1))[0]
    if len(bad):
        return f"NaN in rows {bad.tolist()} that must hold logits"
    filled = np.nonzero(~kept & ~nan.all(axis=1))[0]
    if len(filled):
        return f"rows {filled.tolist()} hold values where the call kept no logits"
    return None


# ------------------------------------------------- .tlm reader (tlm_format.h)

TLM_SECTIONS = ["file_bytes", "meta_offset", "meta_bytes", "tok_offset", "tok_bytes",
                "data_offset", "data_bytes", "dir_offset"]
TLM_ENTRY = struct.Struct("<64sIIQQQQQIIQ")  # one 128-byte directory entry


def tlm_header(data):
    """The section offsets and sizes and n_tensors of a .tlm header (bytes)."""
    out = dict(zip(TLM_SECTIONS, struct.unpack_from("<8Q", data, 16)))
    out["n_tensors"] = struct.unpack_from("<I", data, 80)[0]
    return out


def read_tlm_header(path):
    with open(path, "rb") as f:
        return tlm_header(f.read(128))


def read_tlm_tensors(path):
    """{name: (dtype, rows, cols, bytes)} of a .tlm file."""
    with open(path, "rb") as f:
        data = f.read()
    h = tlm_header(data)
    out = {}
    for i in range(h["n_tensors"]):
        e = TLM_ENTRY.unpack_from(data, h["dir_offset"] + i * TLM_ENTRY.size)
        name = e[0].rstrip(b"\0").decode()
        dtype, rows, cols, off, nbytes = e[1], e[3], e[4], e[5], e[6]
        start = h["data_offset"] + off
        out[name] = (dtype, rows, cols, data[start:start + nbytes])
    return out


# ------------------------------------------------------- numeric references


def log_softmax(x):
    """log softmax over the last axis, shifted by the maximum first."""
    import numpy as np
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def round_half_away(v):
    """C roundf of float32 values (exact in float64), as float64."""
    import numpy as np
    return np.sign(v) * np.floor(np.abs(v.astype(np.float64)) + 0.5)
