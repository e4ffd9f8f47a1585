"""What `trimlm convert`, `trimlm info` and the .tlm loader refuse, on tiny
models written here (tests/py/synth_gguf.py).

  - drops: every --drop / --drop-list is checked against the model's shape
    before calibration (the calibration text given does not exist, so a
    check made after calibrating would report that instead): out-of-range
    layers, a sublayer named twice, a spec given twice, asking for more than
    there are, and drops that leave no attention or no MLP sublayer; each
    exits 2 with one line and writes nothing.
  - formats: an output name whose extension says the other format
    (-o x.tlm --to gguf, -o x.gguf --to tlm) exits 2 and writes nothing;
    inputs are told by their magic bytes: a GGUF file named .tlm and a .tlm
    file named .gguf are read as what they are; a file named .tlm with
    neither magic is reported as a damaged .tlm file.
  - non-finite values: a NaN or Inf poked into one f16 scale of an int8 /
    int4 matrix, or into one f16 weight, with every checksum recomputed
    (tool_tlm_restamp), is refused by `run` and by `info --verify` with one
    line naming the tensor and the row; the untouched file loads and
    verifies. A RoPE base that is infinite (GGUF freq_base = inf; a .tlm
    whose metadata says 1e39, beyond a float) is refused at load.
  - files left behind: convert removes the temporary files of its
    destination that processes no longer running left
    (".NAME.partial-PID-XXXXXX"), and no others (a live PID's, another
    destination's); overwriting a 0600 file keeps it 0600; SIGINT during
    calibration ends the process by SIGINT (shell status 130), as while
    writing, and leaves nothing.
  - warnings, once on stderr: run -c beyond the trained context; a GGUF
    without output.weight (tied by absence) on convert and info.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import synth_gguf
import testutil
from testutil import check, summary

TRIMLM = os.environ["TRIMLM"]
RESTAMP = sys.argv[1]  # tests/tool_tlm_restamp.c
ROOT = testutil.fresh_dir(os.path.join(os.environ.get("TLM_TEST_OUT", "."), "convert_guards"))
N_LAYER = 6


def run(args, timeout=120, env=None):
    return testutil.run([TRIMLM] + args, timeout, env=env)


def refused(name, rc, err, phrase, out=None, code=2):
    lines = testutil.stderr_lines(err)
    check(name, rc == code and len(lines) == 1 and phrase in lines[0] and
          (out is None or not os.path.exists(out)), f"rc={rc} err={err!r}")


# ---------------------------------------------------------------- drops


def check_drops(gguf):
    out = os.path.join(ROOT, "drop.tlm")
    missing = os.path.join(ROOT, "no-such-calibration.txt")
    cases = [
        (["--drop-list", "block:0-5"], "remove every sublayer"),
        (["--drop-list", "attn:0-5"], "remove all 6 attention sublayers"),
        (["--drop-list", "mlp:0-2 mlp:3-5"], "remove all 6 MLP sublayers"),
        (["--drop-list", "attn:0-4 mlp:0-4 block:5"], "remove every sublayer"),
        (["--drop-list", "block:0-6"], "out of range"),
        (["--drop-list", "attn:1,1"], "named twice"),
        (["--drop-list", "attn:3 block:3"], "named twice"),
        (["--drop", "attn:2", "--drop", "attn:2"], "given twice"),
        (["--drop", "attn:7"], "asks for 7"),
        (["--drop", "attn:6"], "remove all 6 attention sublayers"),
        (["--drop", "block:6"], "remove every sublayer"),
        (["--drop", "joint:12"], "remove every sublayer"),
        (["--drop", "mlp:s<1e39"], "remove all 6 MLP sublayers"),
        (["--drop-list", "attn:0-2", "--drop", "attn:6"], "remove all 6 attention"),
        (["--drop", "mlp:2", "--drop-list", "mlp:0-4 mlp:5"], "remove all 6 MLP"),
    ]
    for flags, phrase in cases:
        if os.path.exists(out):
            os.unlink(out)
        rc, _, err = run(["convert", gguf, "-o", out, "--type", "f32", "--calib", missing] + flags)
        refused(f"drops: {' '.join(flags)} -> exit 2 before calibrating, '{phrase}'", rc, err,
                phrase, out)
    # what only the scores decide is refused after calibration, by the
    # library: every importance (1 - cos) is below 3
    rc, _, err = run(["convert", gguf, "-o", out, "--type", "f32", "--drop", "attn:s<3",
                      "--calib-tokens", "128", "--calib-seq", "32"])
    refused("drops: attn:s<3 -> refused after calibration", rc, err,
            "remove all 6 attention sublayers", out)
    # and what leaves one of each kind is written
    rc, _, err = run(["convert", gguf, "-o", out, "--type", "f32",
                      "--drop-list", "attn:0-4 mlp:1-5", "--no-calib"])
    check("drops: one attention and one MLP sublayer left -> written", rc == 0 and
          os.path.exists(out), err)


# -------------------------------------------------------------- formats


def check_formats(gguf):
    for name, to, phrase in (("x.tlm", "gguf", "name ends in .tlm"),
                             ("x.gguf", "tlm", "name ends in .gguf"),
                             ("X.TLM", "gguf", "name ends in .tlm")):
        out = os.path.join(ROOT, name)
        rc, _, err = run(["convert", gguf, "-o", out, "--to", to, "--type", "f32"])
        refused(f"formats: -o {name} --to {to} -> exit 2, '{phrase}'", rc, err, phrase, out)
    tlm = os.path.join(ROOT, "real.tlm")
    rc, _, err = run(["convert", gguf, "-o", tlm, "--type", "f32"])
    check("formats: convert to .tlm", rc == 0, err)
    upper = os.path.join(ROOT, "upper.GGUF")
    rc, _, err = run(["convert", gguf, "-o", upper, "--type", "f32"])
    check("formats: -o upper.GGUF writes a GGUF", rc == 0 and open(upper, "rb").read(4) == b"GGUF",
          err)
    for src, alias, fmt in ((gguf, "gguf-named.tlm", "gguf"), (tlm, "tlm-named.gguf", "tlm")):
        path = os.path.join(ROOT, alias)
        shutil.copyfile(src, path)
        rc, out, err = run(["info", path, "--json"])
        got = json.loads(out).get("format") if rc == 0 else None
        check(f"formats: a {fmt} file named {alias} is read as {fmt}", got == fmt,
              f"rc={rc} format={got} err={err!r}")
        rc, out, err = run(["run", "-m", path, "-p", "a", "-n", "2", "--temp", "0"])
        check(f"formats: run -m {alias}", rc == 0, err)
    junk = testutil.write_bytes(os.path.join(ROOT, "junk.tlm"), b"not a model at all" * 8)
    rc, _, err = run(["info", junk])
    refused("formats: junk named .tlm -> 'bad magic bytes'", rc, err, "bad magic bytes", code=1)


# ------------------------------------------------------ non-finite values

F16_NAN, F16_INF = b"\x00\x7e", b"\x00\x7c"
QB = {"int8": 512, "int4": 256}  # quant bytes per group of a 16-row tile (quant/qformat.h)


def poke(src, dst, tensor, at, data):
    """A copy of src with data written at byte `at` of tensor's bytes, every
    checksum recomputed."""
    raw = bytearray(open(src, "rb").read())
    h = testutil.tlm_header(raw)
    for i in range(h["n_tensors"]):
        e = testutil.TLM_ENTRY.unpack_from(raw, h["dir_offset"] + i * testutil.TLM_ENTRY.size)
        if e[0].rstrip(b"\0").decode() == tensor:
            start = h["data_offset"] + e[5] + at
            raw[start:start + len(data)] = data
            break
    else:
        raise KeyError(tensor)
    testutil.write_bytes(dst, bytes(raw))
    subprocess.run([RESTAMP, dst], check=True, timeout=60)
    return dst


def check_loads(name, path):
    rc, _, err = run(["run", "-m", path, "-p", "a", "-n", "2", "--temp", "0"])
    check(f"{name}: runs", rc == 0, err)
    rc, out, err = run(["info", path, "--verify"])
    check(f"{name}: info --verify ok", rc == 0 and "verify         ok" in out, err)


def check_refused(name, path, phrase):
    rc, _, err = run(["run", "-m", path, "-p", "a", "-n", "2", "--temp", "0"])
    refused(f"{name}: run refuses it, '{phrase}'", rc, err, phrase, code=1)
    rc, out, err = run(["info", path, "--verify"])
    refused(f"{name}: info --verify refuses it", rc, err, phrase, code=1)


def check_non_finite(gguf):
    n_in = 64  # n_embd: attn_q's input size, 2 groups of 32
    for kind in ("int8", "int4"):
        tlm = os.path.join(ROOT, f"{kind}.tlm")
        rc, _, err = run(["convert", gguf, "-o", tlm, "--type", kind, "--no-calib"])
        check(f"non-finite: convert {kind}", rc == 0, err)
        check_loads(f"non-finite: {kind} as written", tlm)
        # tile 0: [2 groups x QB quants][2 groups x 16 f16 scales]; row 3 of group 1
        at = 2 * QB[kind] + 1 * 32 + 3 * 2
        for bits, what in ((F16_NAN, "NaN"), (F16_INF, "Inf")):
            bad = poke(tlm, os.path.join(ROOT, f"{kind}-{what}.tlm"), "blk.1.attn_q.weight", at, bits)
            check_refused(f"non-finite: {kind} with a {what} scale", bad,
                          "tensor 'blk.1.attn_q.weight': the scale of row 3, inputs 32..63 is "
                          "not a finite number")
    f16 = os.path.join(ROOT, "f16.tlm")
    rc, _, err = run(["convert", gguf, "-o", f16, "--type", "f16"])
    check("non-finite: convert f16", rc == 0, err)
    # row 5, input 9 of the MLP's down projection (rows of n_ff = 96 inputs)
    bad = poke(f16, os.path.join(ROOT, "f16-nan.tlm"), "blk.2.ffn_down.weight", (5 * 96 + 9) * 2,
               F16_NAN)
    check_refused("non-finite: f16 weight NaN", bad,
                  "tensor 'blk.2.ffn_down.weight': row 5 holds a value that is not a finite")

    inf_gguf = os.path.join(ROOT, "rope-inf.gguf")
    synth_gguf.write_gguf(inf_gguf, arch="llama", n_layer=2, rope_theta=float("inf"), seed=3)
    rc, _, err = run(["run", "-m", inf_gguf, "-p", "a", "-n", "2"])
    refused("non-finite: GGUF freq_base = inf refused at load", rc, err,
            "must be a finite positive number", code=1)
    raw = open(f16, "rb").read()
    h = testutil.tlm_header(raw)
    meta = raw[h["meta_offset"]:h["meta_offset"] + h["meta_bytes"]]
    key = b'"rope_theta":10000'
    check("non-finite: the .tlm metadata holds rope_theta 10000", meta.count(key) == 1, meta[:200])
    if meta.count(key) == 1:
        big = meta.replace(key, b'"rope_theta":1e39 ')  # same length; a double, no float
        path = testutil.write_bytes(os.path.join(ROOT, "rope-big.tlm"),
                                    raw.replace(meta, big))
        subprocess.run([RESTAMP, path], check=True, timeout=60)
        check_refused("non-finite: .tlm rope_theta 1e39", path, "must be a finite positive number")


# --------------------------------------------------- files left behind


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def partials(directory):
    return sorted(n for n in os.listdir(directory) if ".partial-" in n)


def check_files_left(gguf):
    work = testutil.fresh_dir(os.path.join(ROOT, "left"))
    out = os.path.join(work, "out.tlm")
    dead = dead_pid()
    stale = f".out.tlm.partial-{dead}-Ab3dEf"
    kept = [f".out.tlm.partial-{os.getpid()}-Zz9yXx",  # a live writer's
            f".other.tlm.partial-{dead}-Ab3dEf",       # another destination's
            ".out.tlm.partial-Ab3dEf"]                 # no PID in it
    for name in [stale] + kept:
        testutil.write_bytes(os.path.join(work, name), b"half a model")
    rc, _, err = run(["convert", gguf, "-o", out, "--type", "f32"])
    check("left: convert with stale temporary files around", rc == 0, err)
    check("left: a dead writer's temporary file of the destination is removed, no other",
          partials(work) == sorted(kept), partials(work))

    os.chmod(out, 0o600)
    rc, _, err = run(["convert", gguf, "-o", out, "--type", "f16"])
    mode = os.stat(out).st_mode & 0o777
    check("left: overwriting a 0600 file keeps it 0600", rc == 0 and mode == 0o600, f"{mode:o} {err}")
    fresh = os.path.join(work, "fresh.tlm")
    umask = os.umask(0o022)
    os.umask(umask)
    rc, _, err = run(["convert", gguf, "-o", fresh, "--type", "f32"])
    mode = os.stat(fresh).st_mode & 0o777
    check("left: a new file gets 0644 less the umask", rc == 0 and mode == 0o644 & ~umask, f"{mode:o}")

    # SIGINT while calibrating (far more tokens than it can run in 2 s)
    cal = os.path.join(work, "cal.tlm")
    p = subprocess.Popen([TRIMLM, "convert", gguf, "-o", cal, "--type", "int8",
                          "--calib-tokens", "50000000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1].decode()
    check("left: SIGINT during calibration ends convert by SIGINT (status 130), nothing left",
          p.returncode == -signal.SIGINT and "was not written" in err and not os.path.exists(cal)
          and partials(work) == sorted(kept), f"rc={p.returncode} err={err!r} {partials(work)}")


# ------------------------------------------------------------- warnings


def warnings_in(err, phrase):
    return sum(phrase in line for line in err.splitlines())


def check_warnings(gguf):
    # synth_gguf's models are trained on 256 tokens
    rc, _, err = run(["run", "-m", gguf, "-p", "a", "-n", "2", "-c", "512"])
    check("warn: run -c 512 on a 256-token model warns once",
          rc == 0 and warnings_in(err, "beyond the 256 that") == 1, err)
    rc, _, err = run(["run", "-m", gguf, "-p", "a", "-n", "2", "-c", "256"])
    check("warn: run -c 256 does not", rc == 0 and "warning" not in err, err)
    tied = os.path.join(ROOT, "tied.gguf")
    synth_gguf.write_gguf(tied, arch="llama", n_layer=2, tied=True, seed=5)
    phrase = "has no output matrix (output.weight)"
    for cmd in (["convert", tied, "-o", os.path.join(ROOT, "tied.tlm"), "--type", "f32"],
                ["info", tied]):
        rc, _, err = run(cmd)
        check(f"warn: {cmd[0]} of a GGUF without output.weight warns once",
              rc == 0 and warnings_in(err, phrase) == 1, err)
    for cmd in (["convert", gguf, "-o", os.path.join(ROOT, "untied.tlm"), "--type", "f32"],
                ["info", gguf], ["info", os.path.join(ROOT, "tied.tlm")]):
        rc, _, err = run(cmd)
        check(f"warn: {cmd[0]} {os.path.basename(cmd[1])} does not", rc == 0 and phrase not in err,
              err)


def main():
    gguf = os.path.join(ROOT, "llama6.gguf")
    synth_gguf.write_gguf(gguf, arch="llama", n_layer=N_LAYER, seed=11)
    check_drops(gguf)
    check_formats(gguf)
    check_non_finite(gguf)
    check_files_left(gguf)
    check_warnings(gguf)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
