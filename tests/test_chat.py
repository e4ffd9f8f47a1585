"""`trimlm chat` driven through a pipe (stdin not a terminal), on a tiny
synthetic model: each line is a message, replies go to stdout one per turn.

  test_chat.py     greedy replies against `trimlm run`, incremental prefill,
                   /save and /load, /reset, context overflow, bad files and
                   input, exit codes
"""
import json
import os
import subprocess
import sys

import synth_gguf
from testutil import check, summary, write_bytes

TRIMLM = os.environ["TRIMLM"]
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "chat")


def chat(model, lines, args=(), timeout=120, raw=None):
    """Runs `trimlm chat` with the given input lines; returns (rc, stdout bytes, stderr text)."""
    data = raw if raw is not None else "".join(l + "\n" for l in lines).encode()
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(OUT, "state"))
    p = subprocess.run([TRIMLM, "chat", "-m", model, "--temp", "0", "-t", "1"] + list(args),
                       input=data, capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def run(model, args, timeout=120):
    p = subprocess.run([TRIMLM, "run", "-m", model, "--temp", "0", "-t", "1"] + list(args),
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def load_json(path):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def main():
    os.makedirs(OUT, exist_ok=True)
    model = os.path.join(OUT, "synthetic.gguf")
    # seed 1: greedy replies that are not empty and are valid UTF-8
    synth_gguf.write_gguf(model, ctx=256, seed=1)
    f = lambda name: os.path.join(OUT, name)

    # ---- first turn: the same tokens as `trimlm run` with the same conversation
    for label, extra in (("no system", []), ("--system", ["--system", "You are terse."])):
        rc_r, out_r, err_r = run(model, ["--chat", "-p", "hello", "-n", "12"] + extra)
        rc_c, out_c, err_c = chat(model, ["hello"], ["-n", "12"] + extra)
        # chat keeps the conversation valid UTF-8: bytes of the random model that
        # are not are replaced as Python does (one U+FFFD per maximal subpart)
        want = out_r.decode("utf-8", "replace").encode("utf-8")
        check(f"first greedy reply equals trimlm run ({label})",
              rc_r == 0 and rc_c == 0 and out_c == want and len(out_r.strip()) > 0,
              f"rc={rc_r},{rc_c} run={out_r!r} chat={out_c!r} err={err_c!r}")

    # ---- incremental prefill: turn 2 runs only its new tokens, and gives the
    # same reply as a fresh context that reads the whole conversation
    rc, out, err = chat(model, ["hello", "/stats", "how are you", "/stats", "and then",
                                f"/save {f('three.json')}"], ["-n", "12"])
    stats = [l for l in out.decode("utf-8", "replace").splitlines()
             if l.startswith("context:") or l.startswith("last prefill:")]
    ok = rc == 0 and len(stats) == 4
    if ok:
        used1 = int(stats[0].split()[1])
        used2 = int(stats[2].split()[1])
        prefill2 = int(stats[3].split()[2])
        ok = 0 < prefill2 < used2 - 12 and used1 < used2
    check("second turn prefills only its new tokens", ok, f"rc={rc} stats={stats} err={err!r}")
    conv = load_json(f("three.json"))
    third_incremental = conv["messages"][5]["content"] if len(conv["messages"]) == 6 else None
    two = {"system": None, "messages": conv["messages"][:4]}
    write_bytes(f("two.json"), json.dumps(two).encode())
    rc, out, err = chat(model, [f"/load {f('two.json')}", "and then", f"/save {f('three-b.json')}"],
                        ["-n", "12"])
    conv_b = load_json(f("three-b.json")) if rc == 0 else {"messages": []}
    check("reply after /load equals the reply with the cache kept across turns",
          rc == 0 and third_incremental is not None and
          conv_b["messages"][-1]["content"] == third_incremental,
          f"rc={rc} {third_incremental!r} vs {conv_b['messages'][-1:]!r} err={err!r}")

    # ---- /save then /load round trip
    rc, out, err = chat(model, [f"/load {f('three.json')}", f"/save {f('three-c.json')}"])
    check("/load then /save gives the same file",
          rc == 0 and open(f("three.json"), "rb").read() == open(f("three-c.json"), "rb").read(),
          f"rc={rc} err={err!r}")
    check("saved conversation has the documented shape",
          set(conv) == {"system", "messages"} and len(conv["messages"]) == 6 and
          [m["role"] for m in conv["messages"]] == ["user", "assistant"] * 3 and
          conv["messages"][0]["content"] == "hello", f"{conv!r}")
    rc, out, err = chat(model, ["hi"], ["--system", "Be brief.", "-n", "4"], raw=
                        f"hi\n/save {f('sys.json')}\n".encode())
    check("/save keeps the system message", rc == 0 and load_json(f("sys.json"))["system"] == "Be brief.",
          f"rc={rc} err={err!r}")

    # ---- /reset: the next reply is the first reply again
    rc, out_first, _ = chat(model, ["hello"], ["-n", "12"])
    rc2, out, err = chat(model, ["how are you", "/reset", "hello"], ["-n", "12"])
    check("/reset starts over", rc == 0 and rc2 == 0 and out.endswith(out_first) and
          "cleared" in err, f"{out!r} vs {out_first!r} err={err!r}")

    # ---- /system during the chat keeps the conversation
    rc, out, err = chat(model, ["hello", "/system Answer in French.", "/system",
                                f"/save {f('sys2.json')}"], ["-n", "8"])
    conv = load_json(f("sys2.json")) if rc == 0 else {}
    check("/system sets the system message and keeps the conversation",
          rc == 0 and conv.get("system") == "Answer in French." and len(conv["messages"]) == 2 and
          b"Answer in French." in out and "kept" in err, f"rc={rc} {conv!r} err={err!r}")

    # ---- context overflow: one notice, the chat goes on, the newest turns stay
    lines = [f"message number {i}" for i in range(1, 7)] + [f"/save {f('overflow.json')}"]
    rc, out, err = chat(model, lines, ["-n", "16", "-c", "160"])
    conv = load_json(f("overflow.json")) if rc == 0 else {"messages": []}
    contents = [m["content"] for m in conv["messages"]]
    check("context overflow: one notice, the oldest turns dropped, the chat goes on",
          rc == 0 and err.count("context full: dropped the oldest") == 1 and
          "message number 6" in contents and "message number 1" not in contents and
          len(contents) % 2 == 0, f"rc={rc} err={err!r} contents={contents!r}")

    # ---- a reply that fills the context stops with a notice; the next turn drops
    rc, out, err = chat(model, ["hello", "again", f"/save {f('full.json')}"], ["-c", "64"])
    conv = load_json(f("full.json")) if rc == 0 else {"messages": []}
    check("a reply that fills the context stops, the next message drops the old turn",
          rc == 0 and err.count("the reply stopped: the context of 64 tokens is full") == 2 and
          err.count("context full: dropped the oldest 1 turn") == 1 and
          [m["content"] for m in conv["messages"]][:1] == ["again"],
          f"rc={rc} err={err!r} {conv!r}")

    # ---- /save where it cannot write: a clear error, nothing left behind
    bad_dir = f("no-such-dir")
    rc, out, err = chat(model, ["hello", f"/save {bad_dir}/x.json"], ["-n", "2"])
    check("/save into a missing directory fails clearly",
          rc == 1 and f"{bad_dir}/x.json" in err and not os.path.exists(bad_dir), f"rc={rc} {err!r}")

    # ---- a message larger than the context: refused, the chat goes on
    rc, out, err = chat(model, ["word " * 100, "hello", f"/save {f('big.json')}"],
                        ["-n", "4", "-c", "64"])
    conv = load_json(f("big.json")) if os.path.exists(f("big.json")) else {"messages": []}
    check("a message larger than the context is refused clearly",
          rc == 1 and "context holds 64" in err and "not sent" in err and
          [m["content"] for m in conv["messages"]][:1] == ["hello"],
          f"rc={rc} err={err!r} {conv!r}")

    # ---- bad /load files: one clear line each, the conversation is unchanged
    write_bytes(f("bad-json.json"), b'{"system": null, "messages": [')
    write_bytes(f("bad-shape.json"), b'[1, 2, 3]')
    write_bytes(f("bad-messages.json"), b'{"messages": {"role": "user"}}')
    write_bytes(f("bad-role.json"), b'{"messages": [{"role": "assistant", "content": "x"}, '
                                    b'{"role": "user", "content": "y"}]}')
    write_bytes(f("bad-content.json"), b'{"messages": [{"role": "user", "content": 5}, '
                                       b'{"role": "assistant", "content": "y"}]}')
    write_bytes(f("bad-odd.json"), b'{"messages": [{"role": "user", "content": "x"}]}')
    write_bytes(f("bad-utf8.json"), b'{"messages": [{"role": "user", "content": "a\xff\xfeb"}, '
                                    b'{"role": "assistant", "content": "y"}]}')
    write_bytes(f("bad-system.json"), b'{"system": 3, "messages": []}')
    cases = [("missing", f("no-such-file.json"), "No such file"),
             ("bad-json", f("bad-json.json"), "not valid JSON"),
             ("bad-shape", f("bad-shape.json"), "expected an object"),
             ("bad-messages", f("bad-messages.json"), "must be an array"),
             ("bad-role", f("bad-role.json"), "role 'assistant'"),
             ("bad-content", f("bad-content.json"), "content of message 1 must be a string"),
             ("bad-odd", f("bad-odd.json"), "last message"),
             ("bad-utf8", f("bad-utf8.json"), "not valid UTF-8"),
             ("bad-system", f("bad-system.json"), "\"system\" must be a string")]
    for label, path, want in cases:
        rc, out, err = chat(model, ["hello", f"/load {path}", f"/save {f('after-bad.json')}"],
                            ["-n", "4"])
        lines_err = [l for l in err.splitlines() if path in l]
        conv = load_json(f("after-bad.json"))
        check(f"/load {label}: one clear error, conversation kept",
              rc == 1 and len(lines_err) == 1 and lines_err[0].startswith("trimlm: ") and
              want in lines_err[0] and len(conv["messages"]) == 2,
              f"rc={rc} err={err!r}")

    # ---- invalid UTF-8 typed: replaced, said so, never a crash
    rc, out, err = chat(model, [], ["-n", "4"], raw=b"h\xffi \xe2\x82\n" + f"/save {f('utf8.json')}\n".encode())
    conv = load_json(f("utf8.json")) if rc == 0 else {"messages": [{"content": None}]}
    check("invalid UTF-8 input is replaced by U+FFFD",
          rc == 0 and conv["messages"][0]["content"] == "h\ufffdi \ufffd" and "U+FFFD" in err,
          f"rc={rc} err={err!r} {conv!r}")

    # ---- multi-line input: backslash continuation and """ blocks
    rc, out, err = chat(model, ["first\\", "second", '"""', "block one", "", "block two", '"""',
                                '"""inline"""', "//slash", f"/save {f('multi.json')}"], ["-n", "4"])
    conv = load_json(f("multi.json")) if rc == 0 else {"messages": []}
    check("multi-line messages", rc == 0 and [m["content"] for m in conv["messages"][::2]] ==
          ["first\nsecond", "block one\n\nblock two", "inline", "/slash"],
          f"rc={rc} err={err!r} {conv!r}")

    # ---- commands: help, unknown, quit; end of input
    rc, out, err = chat(model, ["/help", "/bogus", "hello", "/quit", "never sent"], ["-n", "4"])
    check("/help, an unknown command hints and goes on, /quit ends",
          rc == 1 and b"/save FILE" in out and "unknown command '/bogus'" in err and
          "/help" in err, f"rc={rc} out={out[:200]!r} err={err!r}")
    rc, out, err = chat(model, ["hello"], ["-n", "4"])
    check("end of input (Ctrl-D) exits 0", rc == 0 and len(out) > 0, f"rc={rc} err={err!r}")
    rc, out, err = chat(model, [], [])
    check("empty input exits 0 without output", rc == 0 and out == b"", f"rc={rc} {out!r}")
    rc, out, err = chat(model, ["hello", "/stats"], ["-n", "5"])
    check("/stats reports the reply, context and KV cache",
          rc == 0 and b"last reply: 5 tokens" in out and b"of 256 tokens" in out and
          b"KV cache:" in out and b"bytes per token" in out, f"{out!r}")

    # ---- command-line errors
    p = subprocess.run([TRIMLM, "chat"], capture_output=True, stdin=subprocess.DEVNULL)
    check("no model: usage error", p.returncode == 2 and b"-m" in p.stderr, f"{p!r}")
    p = subprocess.run([TRIMLM, "chat", "-m", model, "--bogus"], capture_output=True,
                       stdin=subprocess.DEVNULL)
    check("unknown flag: usage error", p.returncode == 2 and b"--bogus" in p.stderr, f"{p!r}")
    p = subprocess.run([TRIMLM, "chat", "--help"], capture_output=True)
    check("--help", p.returncode == 0 and p.stdout.startswith(b"usage: trimlm chat") and
          b"--temp" in p.stdout, f"{p!r}")
    p = subprocess.run([TRIMLM, "chat", "-m", f("no-such-model.gguf")], capture_output=True,
                       stdin=subprocess.DEVNULL)
    check("missing model: exit 1 naming it", p.returncode == 1 and b"no-such-model.gguf" in p.stderr,
          f"{p!r}")

    sys.exit(summary())


if __name__ == "__main__":
    main()
