"""The calibration pass on a lazily loaded model (model_load_lazy, model.h).

tool_calib_dump runs tlm_calibrate on a model loaded whole and on the same
model loaded lazily (each layer materialised before its turn and released
after it); everything it writes (scores, statistics, progress) must be
byte-identical, for synthetic GGUF models (f32 with GQA, q8_0, q4_1, f16,
qwen2 with biases, one with an attention sublayer removed in memory) and
Hugging Face directories (f32; bf16 in 2 shards; qwen2 f16). Then the
errors: a truncated source is refused by the lazy load with the eager load's
message, and a GGUF file cut after loading makes the pass fail with a clear
message instead of crashing.

Then `trimlm convert`, which loads its source lazily and has the writers
materialise one layer at a time: every output (.tlm f16 / int8 / int4 with
activation-aware scaling, sublayers dropped by score or by list, GGUF
exports with rotate-half permutation, placeholders and biases) must be the
bytes TRIMLM_CONVERT_EAGER=1 (the source loaded whole) writes, apart from
the calibration's wall time in a .tlm file's metadata.

    python test_calib_lazy.py TOOL_CALIB_DUMP      (and $TRIMLM: the CLI)
"""

import os
import shutil
import subprocess
import sys

import hf_fixtures as hf
import synth_gguf
import testutil

FAILURES = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
    if not ok:
        FAILURES.append(name)


def run_tool(tool, model, text, out, *extra):
    cmd = [tool, model, "--calib", text, "--tokens", "100", "--seq", "16", "-t", "2", *extra, out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stderr.strip()


def make_text(path):
    words = "the of and to in is was for on that with as by at from his an were are".split()
    with open(path, "w") as f:
        for i in range(60):
            f.write(" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) + " .\n")


def same_output(tool, name, model, text, out, *extra):
    eager_out, lazy_out = os.path.join(out, "eager.json"), os.path.join(out, "lazy.json")
    rc_e, err_e = run_tool(tool, model, text, eager_out, *extra)
    rc_l, err_l = run_tool(tool, model, text, lazy_out, "--lazy", *extra)
    if rc_e != 0 or rc_l != 0:
        check(name, False, f"exit {rc_e} / {rc_l}: {err_e} / {err_l}")
        return
    with open(eager_out, "rb") as a, open(lazy_out, "rb") as b:
        check(f"{name}: lazy output identical to eager", a.read() == b.read())


def first_line(err):
    return err.splitlines()[0] if err else ""


def same_error(tool, name, model, text, out):
    rc_e, err_e = run_tool(tool, model, text, os.path.join(out, "e.json"))
    rc_l, err_l = run_tool(tool, model, text, os.path.join(out, "l.json"), "--lazy")
    check(f"{name}: refused by both loads with the same message",
          rc_e == 1 and rc_l == 1 and first_line(err_e) == first_line(err_l) and err_e != "",
          f"eager {rc_e} {err_e!r}, lazy {rc_l} {err_l!r}")


def cut(src, dst, keep):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[:keep])


def same_conversion(name, model, text, out, *args):
    """Converts model with the source loaded whole and lazily; compares."""
    trimlm = os.environ["TRIMLM"]
    ext = ".gguf" if "gguf" in args else ".tlm"
    calib = [] if "--no-calib" in args else ["--calib", text, "--calib-tokens", "100",
                                             "--calib-seq", "16"]
    res = {}
    for mode in ("eager", "lazy"):
        dst = os.path.join(out, f"conv_{mode}{ext}")
        env = dict(os.environ, TRIMLM_CONVERT_EAGER="1" if mode == "eager" else "0")
        r = subprocess.run([trimlm, "convert", model, "-o", dst, "-t", "2", *calib, *args],
                           capture_output=True, text=True, timeout=300, env=env)
        if r.returncode != 0:
            check(f"convert {name}", False, f"{mode}: exit {r.returncode}: {r.stderr.strip()}")
            return
        with open(dst, "rb") as f:
            res[mode] = f.read()
    # two runs, calibrated ones included: the file holds nothing that
    # differs from run to run (no wall time), so the bytes must agree
    check(f"convert {name}: lazy output byte-identical to eager", res["eager"] == res["lazy"])


def convert_checks(paths, text, out):
    f32, q8, qwen = paths["llama GQA f32"], paths["llama q8_0"], paths["qwen2 biases"]
    odd = paths["llama f16, n_embd 51"]
    hf_f32, hf_bf16 = paths["llama f32"], paths["llama bf16, 2 shards"]
    # a .tlm source is loaded whole either way; its int8 matrices are copied
    tlm_q8 = os.path.join(out, "source_q8.tlm")
    r = subprocess.run([os.environ["TRIMLM"], "convert", f32, "-o", tlm_q8, "--type", "int8",
                        "--no-calib"], capture_output=True, text=True, timeout=300)
    check("convert to the .tlm source", r.returncode == 0, r.stderr.strip())
    cases = [
        ("GGUF f32 -> f16", f32, "--type", "f16", "--no-calib"),
        ("GGUF f32 -> f32, attn 1 and mlp 2 listed", f32, "--type", "f32", "--no-calib",
         "--drop-list", "attn:1 mlp:2"),
        ("GGUF f32 -> int4 activation-aware, attn:1 dropped", f32, "--type", "int4",
         "--drop", "attn:1"),
        ("GGUF q8_0 -> int8 activation-aware", q8, "--type", "int8"),
        ("GGUF q8_0 -> int4 round-to-nearest", q8, "--type", "int4", "--no-calib"),
        ("GGUF qwen2 biases -> int4 activation-aware, mlp:1 dropped", qwen, "--type", "int4",
         "--drop", "mlp:1"),
        ("GGUF n_embd 51 -> int8 activation-aware", odd, "--type", "int8"),
        ("HF f32 -> int4 activation-aware, block:1 dropped", hf_f32, "--type", "int4",
         "--drop", "block:1"),
        ("HF bf16 2 shards -> bf16", hf_bf16, "--type", "bf16", "--no-calib"),
        ("GGUF f32 -> GGUF f16", f32, "--to", "gguf", "--type", "f16", "--no-calib"),
        ("GGUF f32 -> GGUF int4, deci with placeholders", f32, "--to", "gguf", "--type", "int4",
         "--no-calib", "--drop-list", "attn:1 mlp:0"),
        ("GGUF qwen2 biases -> GGUF int8, attn:1 dropped", qwen, "--to", "gguf", "--type",
         "int8", "--drop", "attn:1"),
        (".tlm int8 -> int8, mlp 1 listed", tlm_q8, "--type", "int8", "--no-calib",
         "--drop-list", "mlp:1"),
        (".tlm int8 -> GGUF int8", tlm_q8, "--to", "gguf", "--type", "int8", "--no-calib"),
    ]
    for name, model, *args in cases:
        same_conversion(name, model, text, out, *args)


def main():
    tool = sys.argv[1]
    out = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "calib_lazy")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    text = os.path.join(out, "calib.txt")
    make_text(text)

    gguf_models = [
        ("llama GQA f32", dict(arch="llama", n_layer=3, tied=False, seed=31)),
        ("llama q8_0", dict(arch="llama", n_layer=2, qtype="q8_0", seed=32)),
        ("llama q4_1 tied", dict(arch="llama", n_layer=2, qtype="q4_1", tied=True, seed=33)),
        ("llama f16, n_embd 51", dict(arch="llama", n_layer=2, n_embd=51, n_head=3, n_head_kv=1,
                                      head_dim=16, n_ff=77, qtype="f16", seed=34)),
        ("qwen2 biases", dict(arch="qwen2", n_layer=2, tied=True, rope_theta=1e6, seed=35)),
    ]
    paths = {}
    for name, kw in gguf_models:
        p = os.path.join(out, name.split()[0] + f"_{kw['seed']}.gguf")
        synth_gguf.write_gguf(p, **kw)
        paths[name] = p
        same_output(tool, f"GGUF {name}", p, text, out)
    same_output(tool, "GGUF llama GQA f32, attention 1 removed", paths["llama GQA f32"], text, out,
                "--drop-attn", "1")

    hf_models = [
        ("llama f32", hf.llama_config(), dict(dtype="f32", seed=41)),
        ("llama bf16, 2 shards", hf.llama_config(), dict(dtype="bf16", shards=2, seed=42)),
        ("qwen2 f16", hf.qwen2_config(), dict(dtype="f16", seed=43)),
    ]
    for name, cfg, kw in hf_models:
        d = os.path.join(out, "hf_" + name.split()[0] + f"_{kw['seed']}")
        hf.write_model_dir(d, cfg, **kw)
        paths[name] = d
        same_output(tool, f"HF {name}", d, text, out)

    # a source cut inside its tensor data: refused at load, as the eager load does
    src = paths["llama GQA f32"]
    size = os.path.getsize(src)
    bad = os.path.join(out, "cut.gguf")
    cut(src, bad, size - 100)
    same_error(tool, "GGUF cut short", bad, text, out)
    bad_dir = os.path.join(out, "hf_cut")
    shutil.copytree(paths["llama bf16, 2 shards"], bad_dir)
    shard = os.path.join(bad_dir, hf.shard_file_name(1, 2))
    cut(shard, shard, os.path.getsize(shard) - 64)
    same_error(tool, "HF shard cut short", bad_dir, text, out)

    # the file shrinks after the lazy load: the pass stops with an error naming it
    copy = os.path.join(out, "shrinks.gguf")
    shutil.copyfile(src, copy)
    rc, err = run_tool(tool, copy, text, os.path.join(out, "s.json"), "--lazy",
                       "--truncate-source", str(size // 2))
    check("GGUF cut after the lazy load: a clear error",
          rc == 1 and copy in err and "truncated after loading" in err, f"exit {rc}: {err!r}")

    convert_checks(paths, text, out)

    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        sys.exit(1)
    print("all lazy-load checks passed")


if __name__ == "__main__":
    main()
