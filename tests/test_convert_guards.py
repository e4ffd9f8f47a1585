"""What `trimlm convert`, `trimlm info` and the .tlm loader refuse, on tiny
models written here (tests/py/synth_gguf.py).

  - drops: every --drop / --drop-list is checked against the model's shape
    before calibration (the calibration text given does not exist, so a
    check made after calibrating would report that instead): out-of-range
    layers, a sublayer named twice, a spec given twice, asking for more than
    there are, and drops that leave no attention or no MLP sublayer; each
    exits 2 with one line and writes nothing.
"""
import os
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


def main():
    gguf = os.path.join(ROOT, "llama6.gguf")
    synth_gguf.write_gguf(gguf, arch="llama", n_layer=N_LAYER, seed=11)
    check_drops(gguf)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
