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
"""
import json
import os
import shutil
import sys

import synth_gguf
import testutil
from testutil import check, summary

TRIMLM = os.environ["TRIMLM"]
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


def main():
    gguf = os.path.join(ROOT, "llama6.gguf")
    synth_gguf.write_gguf(gguf, arch="llama", n_layer=N_LAYER, seed=11)
    check_drops(gguf)
    check_formats(gguf)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
