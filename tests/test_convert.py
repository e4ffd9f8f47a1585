"""`trimlm convert` and `trimlm info` end to end.

    test_convert.py synthetic TOOL_LOGITS   tiny GGUF (llama, qwen2, Q8_0) and
                                            Hugging Face models written here
    test_convert.py real TOOL_LOGITS        the default model (SmolLM2 GGUF)

A converted model must compute what its source computes: at f32 the logits
of tests/tool_logits.c are bit-identical to the source's, at f16/bf16 they
stay within a stated tolerance with the same argmax; its tokenizer gives the
same ids (through the public API via ctypes); `info --json` agrees with the
gguf package's reading of the source and with the file itself. Damaged,
truncated, self-overwriting and full-disk cases fail with one clear line and
leave no partial file.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

# The GGUF sources' own logits, which the converted files are compared with,
# come from the f32 widening of their weights (what convert starts from), not
# from the default in-place load with its int8 activations.
os.environ["TRIMLM_GGUF_F32"] = "1"

import numpy as np

import gguf
import hf_fixtures
import synth_gguf
from testutil import check, failures, fresh_dir, one_line, summary
import testutil

TRIMLM = os.environ["TRIMLM"]
BUILD = os.environ.get("TLM_BUILD", ".")
ROOT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "convert")

# f16 storage of the weights moves logits by rounding only: |diff| stays far
# below this on both the tiny models (|logit| ~ 1-50) and SmolLM2 (~ 30).
F16_LOGIT_TOL = 0.25
BF16_LOGIT_TOL = 1.0


def run(args, timeout=600):
    return testutil.run([TRIMLM] + args, timeout)


def logits(tool, model, tokens, out, threads=1):
    p = subprocess.run([tool, model, "--tokens", ",".join(map(str, tokens)), "-t", str(threads), out],
                       capture_output=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"tool_logits {model}: {p.stderr.decode()}")
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1)


def greedy(tool, model, tokens, n, out, threads=1):
    p = subprocess.run([tool, model, "--tokens", ",".join(map(str, tokens)), "--generate", str(n),
                        "-t", str(threads), out], capture_output=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"tool_logits {model}: {p.stderr.decode()}")
    return open(out).read().strip()


def convert(src, dst, *extra):
    rc, out, err = run(["convert", src, "-o", dst] + list(extra))
    if rc != 0:
        raise RuntimeError(f"convert {src} -> {dst}: rc={rc} {err}")


def info_json(path, *extra):
    rc, out, err = run(["info", path, "--json"] + list(extra))
    return rc, (json.loads(out) if out.strip().startswith("{") else None), err


# ------------------------------------------------------------ tokens (ctypes)

class Api:
    """The public API of libtrimlm.so, for tokenizing through a loaded model."""

    def __init__(self):
        path = os.path.join(BUILD, "libtrimlm.so")
        if not os.path.exists(path):
            raise SystemExit(f"FAIL: {path} is missing (build the 'trimlm' shared library target)")
        self.lib = ctypes.CDLL(path)
        self.err = ctypes.create_string_buffer(4 + 4 + 512)
        self.lib.tlm_model_load.restype = ctypes.c_void_p
        self.lib.tlm_model_load.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        self.lib.tlm_model_free.argtypes = [ctypes.c_void_p]
        self.lib.tlm_tokenize.restype = ctypes.c_int32
        self.lib.tlm_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                          ctypes.c_bool, ctypes.c_bool,
                                          ctypes.POINTER(ctypes.c_int32), ctypes.c_int32,
                                          ctypes.c_void_p]

    def load(self, path):
        m = self.lib.tlm_model_load(path.encode(), self.err)
        if not m:
            msg = self.err.raw[4:].split(b"\0")[0].decode(errors="replace")
            raise RuntimeError(f"load {path}: {msg}")
        return m

    def tokenize(self, m, text):
        data = text.encode()
        cap = 4 * len(data) + 8
        buf = (ctypes.c_int32 * cap)()
        n = self.lib.tlm_tokenize(m, data, len(data), True, True, buf, cap, self.err)
        if n < 0 or n > cap:
            raise RuntimeError("tokenize failed")
        return list(buf[:n])


def same_tokens(api, a_path, b_path, texts):
    a, b = api.load(a_path), api.load(b_path)
    try:
        for t in texts:
            ta, tb = api.tokenize(a, t), api.tokenize(b, t)
            if ta != tb:
                return False, f"{t!r}: {ta[:12]} vs {tb[:12]}"
        return True, ""
    finally:
        api.lib.tlm_model_free(a)
        api.lib.tlm_model_free(b)


TEXTS = ["The quick brown fox jumps over the lazy dog.", " leading space", "tab\tand\nnewline",
         "<|im_start|>user\nhello<|im_end|>", "unicode: caf\u00e9 \u4e2d\u6587 \U0001F600",
         "digits 1234567890 and symbols {}[]()", ""]


# ----------------------------------------------------------------- synthetic

def same_argmax(ref, got, diff):
    """Argmax equal at every position whose top-two margin a perturbation of
    at most diff per logit cannot close."""
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * diff
    return bool((ref.argmax(1) == got.argmax(1))[decided].all())


def check_round_trip(tool, api, label, src, work, tokens, vocab_texts):
    f32 = os.path.join(work, label + "-f32.tlm")
    f16 = os.path.join(work, label + "-f16.tlm")
    bf16 = os.path.join(work, label + "-bf16.tlm")
    convert(src, f32, "--type", "f32")
    convert(src, f16)
    convert(src, bf16, "--type", "bf16")
    ref = logits(tool, src, tokens, os.path.join(work, "ref.f32"))
    got = logits(tool, f32, tokens, os.path.join(work, "got.f32"))
    check(f"{label}: f32 .tlm logits are bit-identical to the source's",
          ref.tobytes() == got.tobytes(), f"max diff {np.abs(ref - got).max()}")
    got2 = logits(tool, f32, tokens, os.path.join(work, "got2.f32"), threads=2)
    ref2 = logits(tool, src, tokens, os.path.join(work, "ref2.f32"), threads=2)
    check(f"{label}: same at 2 threads", ref2.tobytes() == got2.tobytes())
    for path, tol, name in ((f16, F16_LOGIT_TOL, "f16"), (bf16, BF16_LOGIT_TOL, "bf16")):
        g = logits(tool, path, tokens, os.path.join(work, "low.f32"))
        diff = float(np.abs(ref - g).max())
        check(f"{label}: {name} logits within {tol} of the source's (max |diff| {diff:.4g}), "
              f"same argmax where the top two differ by more than 2 x that",
              diff <= tol and same_argmax(ref, g, diff), f"diff {diff}")
    ok, why = same_tokens(api, src, f32, vocab_texts)
    check(f"{label}: token ids identical through the .tlm tokenizer", ok, why)
    # a .tlm source converted again (f32 -> f16) computes what the direct f16 does
    again = os.path.join(work, label + "-again.tlm")
    convert(f32, again)
    a = logits(tool, again, tokens, os.path.join(work, "a.f32"))
    b = logits(tool, f16, tokens, os.path.join(work, "b.f32"))
    check(f"{label}: .tlm -> .tlm (f32 -> f16) equals the direct f16 conversion",
          a.tobytes() == b.tobytes())
    return f32, f16


def check_info(label, tlm, src, src_format, n_layer, n_head_kv, head_dim, tied):
    rc, d, err = info_json(tlm, "--verify")
    if d is None:
        check(f"{label}: info --json", False, f"rc={rc} {err}")
        return
    size = os.path.getsize(tlm)
    n_mat = sum(1 for t in d["tensors"] if len(t["shape"]) == 2)
    n_vec = sum(1 for t in d["tensors"] if len(t["shape"]) == 1)
    ok = (rc == 0 and d["format"] == "tlm" and d["format_version"] == 1
          and d["file_bytes"] == size and d["verify"]["ok"] is True
          and d["hparams"]["n_layer"] == n_layer and d["hparams"]["n_head_kv"] == n_head_kv
          and d["hparams"]["head_dim"] == head_dim and d["hparams"]["tied_embeddings"] == tied
          and d["source"] == os.path.basename(src.rstrip("/")) and d["convert_type"] == "f16"
          and d["kv_cache"]["bytes_per_token"] == 2 * n_layer * n_head_kv * head_dim * 2
          and d["kv_cache"]["precision"] == "f16"
          and [(g["kind"], g["layer"]) for g in d["graph"]]
          == [(k, l) for l in range(n_layer) for k in ("attn", "mlp")]
          and d["tensor_types"].get("f16", {}).get("count") == n_mat
          and d["tensor_types"].get("f32", {}).get("count") == n_vec
          and abs(d["bits_per_weight"] - d["tensor_bytes"] * 8 / d["n_weights"]) < 1e-9
          and all(t["offset"] % 64 == 0 for t in d["tensors"])
          and d["tensor_bytes"] == sum(t["bytes"] for t in d["tensors"])
          and d["n_weights"] == sum(int(np.prod(t["shape"])) for t in d["tensors"])
          and d["n_params"] == d["n_weights"])
    check(f"{label}: info --json --verify of the .tlm agrees with the file", ok,
          json.dumps({k: d[k] for k in d if k not in ("tensors", "graph")})[:600])
    # every tensor's bytes lie where info says, inside the file
    last = max(t["offset"] + t["bytes"] for t in d["tensors"])
    check(f"{label}: tensor offsets lie inside the file", last <= size)
    rc, s, err = info_json(src)
    ok = (rc == 0 and s is not None and s["format"] == src_format
          and s["hparams"]["n_layer"] == n_layer and len(s["graph"]) == 2 * n_layer
          and s["n_params"] == d["n_params"] and s["file_bytes"] > 0)
    check(f"{label}: info --json of the source ({src_format})", ok, f"rc={rc} {err}")
    rc, out, err = run(["info", tlm])
    check(f"{label}: info (text) lists the graph and the KV cost",
          rc == 0 and "attn" in out and "bits/weight" in out and "bytes per token" in out, out[:300])


def damaged_copies(tool, work, tlm):
    """A few damaged files through the command line (thousands more in test_tlm_format)."""
    data = open(tlm, "rb").read()
    rc, d, _ = info_json(tlm)
    victim = [t for t in d["tensors"] if len(t["shape"]) == 2][1]
    bad = os.path.join(work, "damaged.tlm")

    def write(b):
        with open(bad, "wb") as f:
            f.write(b)

    b = bytearray(data)
    b[victim["offset"] + victim["bytes"] // 2] ^= 0x10
    write(b)
    rc, out, err = run(["info", bad, "--verify"])
    check("a flipped bit in tensor data: info --verify fails naming the tensor",
          rc == 1 and one_line(err) and f"tensor '{victim['name']}' is damaged" in err, f"rc={rc} {err!r}")
    rc, out, err = run(["run", "-m", bad, "-p", "hi", "-n", "2", "--temp", "0"])
    check("... and running it without --verify does not crash", rc in (0, 1), f"rc={rc} {err!r}")
    for at, what in ((200, "metadata"), (3, "magic"), (20, "header"), (len(data) - 50, "directory")):
        b = bytearray(data)
        b[at] ^= 0x01
        write(b)
        rc, out, err = run(["run", "-m", bad, "-p", "hi", "-n", "2"])
        check(f"a flipped bit in the {what}: run fails with one line",
              rc == 1 and one_line(err) and ("damaged" in err or "not a trimlm model file" in err),
              f"rc={rc} {err!r}")
    for cut in (0, 5, 64, 127, 128, 1000, len(data) // 2, len(data) - 1):
        write(data[:cut])
        for cmd in (["info", bad], ["run", "-m", bad, "-p", "hi"]):
            rc, out, err = run(cmd)
            check(f"cut at {cut} bytes: {cmd[0]} fails with one line saying 'truncated'",
                  rc == 1 and one_line(err) and "truncated" in err and bad in err, f"rc={rc} {err!r}")


def disk_full(src):
    """Converting onto a 64 KiB tmpfs in a private mount namespace."""
    target = fresh_dir(os.path.join(ROOT, "full"))
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{target}'"],
                           capture_output=True)
    if probe.returncode != 0:
        print("SKIP: disk-full check (cannot mount a tmpfs here)")
        return
    script = (f"mount -t tmpfs -o size=64k tmpfs '{target}' && \"$@\"; rc=$?; "
              f"ls -A '{target}'; exit $rc")
    p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", TRIMLM, "convert", src, "-o",
                        os.path.join(target, "out.tlm"), "--type", "f32"],
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    err, left = p.stderr.decode(), p.stdout.decode().split()
    check("convert onto a full disk: one line naming the file, nothing left behind",
          p.returncode == 1 and one_line(err) and "No space left on device" in err
          and "out.tlm" in err and left == [], f"rc={p.returncode} err={err!r} left={left}")


def synthetic(tool):
    api = Api()
    work = fresh_dir(os.path.join(ROOT, "synthetic"))
    tokens = [1, 17, 300, 42, 5, 99, 250, 7, 318, 0, 64]

    src = os.path.join(work, "llama.gguf")
    synth_gguf.write_gguf(src, arch="llama", n_layer=3, rope_scaling=("linear", 2.0))
    texts = TEXTS + ["the rain in spain", "<|endoftext|>abc"]
    f32, f16 = check_round_trip(tool, api, "gguf llama", src, work, tokens, texts)
    check_info("gguf llama", f16, src, "gguf", 3, 2, 16, False)

    src_q = os.path.join(work, "qwen2.gguf")
    synth_gguf.write_gguf(src_q, arch="qwen2", tied=True, head_dim=32, n_head=4, n_head_kv=1)
    _, q16 = check_round_trip(tool, api, "gguf qwen2 tied", src_q, work, tokens, texts)
    check_info("gguf qwen2 tied", q16, src_q, "gguf", 2, 1, 32, True)

    src_q8 = os.path.join(work, "q8.gguf")
    synth_gguf.write_gguf(src_q8, arch="llama", qtype="q8_0")
    check_round_trip(tool, api, "gguf Q8_0", src_q8, work, tokens, texts)

    for label, cfg, dtype in (("hf llama", hf_fixtures.llama_config(), "f32"),
                              ("hf qwen2 bf16", hf_fixtures.qwen2_config(), "bf16")):
        d = os.path.join(work, label.replace(" ", "-"))
        hf_fixtures.write_model_dir(d, cfg, dtype=dtype, shards=2 if dtype == "bf16" else 1)
        _, h16 = check_round_trip(tool, api, label, d, work, tokens, texts)
        dims = hf_fixtures.config_dims(cfg)
        check_info(label, h16, d, "safetensors", dims[2], dims[4], dims[5],
                   cfg["tie_word_embeddings"])
        ok, why = same_tokens(api, d, h16, texts)
        check(f"{label}: f16 .tlm tokens equal the tokenizer.json's", ok, why)

    damaged_copies(tool, work, f16)

    # refusals and bad flags
    rc, out, err = run(["convert", f32, "-o", f32])
    check("convert onto its own input is refused", rc == 1 and one_line(err)
          and "refusing to overwrite the input" in err, f"rc={rc} {err!r}")
    before = open(f32, "rb").read()
    link = os.path.join(work, "link.tlm")
    os.link(f32, link)
    rc, out, err = run(["convert", f32, "-o", link])
    check("... also through a hard link, and the input is unchanged",
          rc == 1 and "refusing" in err and open(f32, "rb").read() == before, f"rc={rc} {err!r}")
    hf_dir = os.path.join(work, "hf-llama")
    rc, out, err = run(["convert", hf_dir, "-o", os.path.join(hf_dir, "config.json")])
    check("convert onto a file of the source directory is refused",
          rc == 1 and "refusing" in err, f"rc={rc} {err!r}")
    inside = os.path.join(hf_dir, "model.tlm")
    rc1, _, err1 = run(["convert", hf_dir, "-o", inside])
    rc2, _, err2 = run(["convert", hf_dir, "-o", inside])
    check("a .tlm written into the source directory can be written again", rc1 == 0 and rc2 == 0,
          f"{err1!r} {err2!r}")
    os.unlink(inside)
    rc, out, err = run(["convert", src, "-o", os.path.join(work, "x.tlm"), "--type", "int3"])
    check("--type int3 is a usage error", rc == 2 and one_line(err) and "--type" in err, err)
    rc, out, err = run(["convert", src])
    check("missing -o is a usage error", rc == 2 and one_line(err) and "-o" in err, err)
    rc, out, err = run(["convert", src, "-o", os.path.join(work, "w.tlm"), "--keep-wide", "outptu"])
    check("--keep-wide with an unknown name fails naming it", rc == 1 and one_line(err)
          and "outptu" in err and not os.path.exists(os.path.join(work, "w.tlm")), err)
    rc, out, err = run(["convert", src, "-o", os.path.join(work, "w.tlm"), "--keep-wide", "output,attn_q"])
    _, d, _ = info_json(os.path.join(work, "w.tlm"))
    wide = sorted(t["name"] for t in d["tensors"] if t["type"] == "f32" and len(t["shape"]) == 2)
    check("--keep-wide output,attn_q keeps exactly those matrices f32",
          rc == 0 and wide == sorted(["output.weight"] + [f"blk.{i}.attn_q.weight" for i in range(3)]),
          wide)
    rc, out, err = run(["convert", os.path.join(work, "missing.gguf"), "-o", os.path.join(work, "m.tlm")])
    check("a missing source fails with one line", rc == 1 and one_line(err) and "missing.gguf" in err, err)
    left = [n for n in os.listdir(work) if ".partial-" in n]
    check("no temporary file is left in the output directory", left == [], left)

    rc, out, err = run(["info", "--system"])
    rc2, ver, _ = run(["--version"])
    isa = ver.split("kernels: ")[-1].rstrip(")\n") if "kernels: " in ver else "?"
    check("info --system names the kernel set and the cores",
          rc == 0 and out.startswith("kernels") and isa in out.splitlines()[0]
          and "physical cores" in out, out)
    rc, out, err = run(["info", "--system", "--json"])
    check("info --system --json", rc == 0 and json.loads(out)["isa"] == isa, out)

    disk_full(src)


# --------------------------------------------------------------------- real

def real(tool):
    api = Api()
    src = testutil.real_model_path()
    work = fresh_dir(os.path.join(ROOT, "real"))
    f32 = os.path.join(work, "smollm2-f32.tlm")
    f16 = os.path.join(work, "smollm2-f16.tlm")
    t0 = time.time()
    convert(src, f32, "--type", "f32")
    t1 = time.time()
    convert(src, f16)
    print(f"convert: f32 {t1 - t0:.1f} s, f16 {time.time() - t1:.1f} s; sizes "
          f"{os.path.getsize(f32)} / {os.path.getsize(f16)} bytes")
    # "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    m = api.load(src)
    prompt = api.tokenize(m, "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                             "<|im_start|>assistant\n")
    api.lib.tlm_model_free(m)
    ref = logits(tool, src, prompt, os.path.join(work, "ref.f32"), threads=2)
    got = logits(tool, f32, prompt, os.path.join(work, "got.f32"), threads=2)
    check("SmolLM2 f32 .tlm: logits bit-identical to the GGUF path", ref.tobytes() == got.tobytes(),
          f"max diff {np.abs(ref - got).max()}")
    low = logits(tool, f16, prompt, os.path.join(work, "low.f32"), threads=2)
    diff = float(np.abs(ref - low).max())
    print(f"SmolLM2 f16 .tlm: max |logit diff| {diff:.4g} over {len(prompt)} positions "
          f"(max |logit| {float(np.abs(ref).max()):.3g})")
    check(f"SmolLM2 f16 .tlm: logits within {F16_LOGIT_TOL} of the GGUF path, same argmax",
          diff <= F16_LOGIT_TOL and same_argmax(ref, low, diff), f"diff {diff}")
    g_ref = greedy(tool, src, prompt, 24, os.path.join(work, "g0.txt"), threads=2)
    g_32 = greedy(tool, f32, prompt, 24, os.path.join(work, "g1.txt"), threads=2)
    g_16 = greedy(tool, f16, prompt, 24, os.path.join(work, "g2.txt"), threads=2)
    check("SmolLM2 f32 .tlm: 24 greedy tokens equal the GGUF path's", g_ref == g_32, f"{g_ref} vs {g_32}")
    print(f"f16 greedy equals the GGUF path's: {g_ref == g_16}")
    corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tokenizer_corpus.txt")
    lines = open(corpus, encoding="utf-8", errors="replace").read().splitlines()
    ok, why = same_tokens(api, src, f16, TEXTS + lines)
    check(f"SmolLM2 .tlm: token ids identical on {len(TEXTS) + len(lines)} texts", ok, why)

    rc, d, err = info_json(f16, "--verify")
    ok = (rc == 0 and d["hparams"]["n_layer"] == 30 and d["hparams"]["n_embd"] == 576
          and d["hparams"]["n_head"] == 9 and d["hparams"]["n_head_kv"] == 3
          and d["hparams"]["n_ff"] == 1536 and d["hparams"]["tied_embeddings"] is True
          and d["kv_cache"]["bytes_per_token"] == 2 * 30 * 3 * 64 * 2
          and 16.0 < d["bits_per_weight"] < 16.2 and d["verify"]["ok"] is True
          and d["chat_template"] is True and len(d["graph"]) == 60)
    print(f"info: {d['file_bytes']} bytes, {d['bits_per_weight']:.3f} bits/weight, "
          f"KV {d['kv_cache']['bytes_per_token']} bytes/token")
    check("SmolLM2 f16 .tlm: info --json --verify", ok, err)
    reader = gguf.GGUFReader(src)
    n_src = sum(int(np.prod(t.shape)) for t in reader.tensors)
    check("SmolLM2 .tlm holds as many weights as the GGUF", d["n_weights"] == n_src,
          f"{d['n_weights']} vs {n_src}")

    # Ctrl-C while converting: no output and no temporary file, whether it
    # lands while the source loads (the default action) or while the output
    # is written (the conversion is cancelled and cleans up first).
    out = os.path.join(work, "interrupted.tlm")
    full = 1e9
    for _ in range(2):  # the second run is the warm one the trials below see
        t0 = time.time()
        convert(src, out, "--type", "f32")
        full = min(full, time.time() - t0)
        os.unlink(out)
    n_writing = 0
    for frac in (0.1, 0.4, 0.6, 0.75, 0.9):
        p = subprocess.Popen([TRIMLM, "convert", src, "-o", out, "--type", "f32"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(frac * full)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=120)[1].decode()
        n_writing += "was not written" in err
        left = [n for n in os.listdir(work) if ".partial-" in n or n == "interrupted.tlm"]
        complete = p.returncode == 0 and left == ["interrupted.tlm"] and \
            run(["info", out, "--verify"])[0] == 0
        check(f"SIGINT at {frac:.0%} of a conversion: nothing left, or a complete file with "
              f"exit status 0 (rc {p.returncode})", left == [] or complete, f"{left} {err!r}")
        if os.path.exists(out):
            os.unlink(out)
    print(f"{n_writing} of 5 interruptions landed while writing")
    if not failures:  # 800 MB of converted models are only worth keeping to debug a failure
        for path in (f32, f16):
            os.unlink(path)


def main():
    mode, tool = sys.argv[1], sys.argv[2]
    os.makedirs(ROOT, exist_ok=True)
    if mode == "synthetic":
        synthetic(tool)
    elif mode == "real":
        real(tool)
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.exit(summary())


if __name__ == "__main__":
    main()
