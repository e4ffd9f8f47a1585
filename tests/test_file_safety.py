"""What trimlm does with the user's files, on a tiny synthetic model.

  - no output replaces one of the command's inputs, named by its path, by a
    symlink or by a hard link: score --plot, eval --details, chat /save,
    convert -o; the input is byte-for-byte unchanged and the exit code is 1;
  - text inputs that are not regular files (/dev/zero, a FIFO) are refused
    with a message naming them, instead of being read until memory runs out;
  - -t: one limit for the CLI and the library, and a warning above the
    number of CPUs;
  - a system message longer than the context is refused when it is set.
"""
import hashlib
import json
import os
import subprocess
import threading

import synth_gguf
from testutil import check, fresh_dir, one_line, summary, write_bytes

TRIMLM = os.environ["TRIMLM"]
OUT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "file_safety")


def run(args, stdin=b"", timeout=60):
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(OUT, "state"))
    p = subprocess.run([TRIMLM] + list(args), input=stdin, capture_output=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def aliases(dir_, target, stem):
    """target itself, a symlink to it and a hard link to it."""
    sym = os.path.join(dir_, stem + "-symlink")
    hard = os.path.join(dir_, stem + "-hardlink")
    for p in (sym, hard):
        if os.path.lexists(p):
            os.remove(p)
    os.symlink(os.path.abspath(target), sym)
    os.link(target, hard)
    return (("its path", target), ("a symlink", sym), ("a hard link", hard))


def overwrite_checks(model):
    d = os.path.join(OUT, "overwrite")
    model_sum = digest(model)
    arc = os.path.join(d, "arc.jsonl")
    write_bytes(arc, b"".join(json.dumps({"query": f"Question: q{i}?\nAnswer:", "gold": i % 2,
                                          "choices": [" yes", " no"]}).encode() + b"\n"
                              for i in range(3)))
    arc_sum = digest(arc)

    def refused(label, args, victim, want_sum, stdin=b""):
        rc, out, err = run(args, stdin)
        check(label, rc == 1 and "refusing to overwrite" in err and digest(victim) == want_sum,
              f"rc={rc} err={err!r} changed={digest(victim) != want_sum}")

    for how, path in aliases(d, model, "model"):
        refused(f"score --plot onto the model ({how}) is refused", ["score", model, "--plot", path],
                model, model_sum)
        refused(f"eval --details onto the model ({how}) is refused",
                ["eval", "-m", model, "--mc", arc, "--task", "arc", "--details", path], model, model_sum)
        refused(f"convert -o onto the model ({how}) is refused",
                ["convert", model, "-o", path, "--type", "f32"], model, model_sum)
        rc, out, err = run(["chat", "-m", model, "-t", "1", "-n", "2"], f"/save {path}\n".encode())
        check(f"chat /save onto the loaded model ({how}) is refused",
              rc == 1 and "refusing to overwrite" in err and digest(model) == model_sum,
              f"rc={rc} err={err!r}")
    for how, path in aliases(d, arc, "arc"):
        refused(f"eval --details onto the --mc data ({how}) is refused",
                ["eval", "-m", model, "--mc", arc, "--task", "arc", "--details", path], arc, arc_sum)
    calib = write_bytes(os.path.join(d, "calib.txt"), b"the cat sat on the mat. " * 40)
    calib_sum = digest(calib)
    refused("score --plot onto the --calib text is refused",
            ["score", model, "--calib", calib, "--plot", calib], calib, calib_sum)
    refused("convert -o onto the --calib text is refused",
            ["convert", model, "-o", calib, "--type", "int8", "--calib", calib], calib, calib_sum)

    # what is not an input is still written
    details = os.path.join(d, "details.jsonl")
    rc, out, err = run(["eval", "-m", model, "--mc", arc, "--task", "arc", "--details", details, "-t", "1"])
    check("eval --details to a new file still works",
          rc == 0 and os.path.exists(details) and len(open(details).read().splitlines()) == 3,
          f"rc={rc} err={err!r}")
    saved = os.path.join(d, "conv.json")
    rc, out, err = run(["chat", "-m", model, "-t", "1", "-n", "2"], f"hi\n/save {saved}\n".encode())
    check("chat /save to a new file still works",
          rc == 0 and json.load(open(saved))["messages"][0]["content"] == "hi", f"rc={rc} err={err!r}")


def unbounded_read_checks(model):
    d = os.path.join(OUT, "reads")
    os.makedirs(d, exist_ok=True)
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    for src in ("/dev/zero", "/dev/urandom", fifo):
        cases = (("run -f", ["run", "-m", model, "-f", src, "-n", "1"], b""),
                 ("eval --ppl", ["eval", "-m", model, "--ppl", src], b""),
                 ("eval --mc", ["eval", "-m", model, "--mc", src, "--task", "arc"], b""),
                 ("chat /load", ["chat", "-m", model, "-t", "1"], f"/load {src}\n".encode()))
        for label, args, stdin in cases:
            try:
                rc, out, err = run(args, stdin, timeout=20)
            except subprocess.TimeoutExpired:
                rc, err = None, "timed out"
            errors = [l for l in err.splitlines() if "warning:" not in l]
            check(f"{label} {os.path.basename(src)}: refused at once, naming the file",
                  rc == 1 and len(errors) == 1 and src in errors[0] and "not a regular file" in errors[0],
                  f"rc={rc} err={err!r}")
    # standard input is read only up to the limit (64 MiB for a prompt)
    with open("/dev/zero", "rb") as zero:
        p = subprocess.run([TRIMLM, "run", "-m", model, "-f", "-", "-n", "1"], stdin=zero,
                           capture_output=True, timeout=60)
    err = p.stderr.decode("utf-8", "replace")
    check("run -f - from /dev/zero stops at the limit",
          p.returncode == 1 and one_line(err) and "standard input" in err and "allowed" in err,
          f"rc={p.returncode} err={err!r}")


def thread_checks(model):
    cpus = len(os.sched_getaffinity(0))
    for cmd in (["run", "-m", model, "-p", "hi", "-n", "1"], ["chat", "-m", model],
                ["eval", "-m", model, "--ppl", model], ["score", model], ["convert", model, "-o", "x.tlm"],
                ["bench", "-m", model]):
        rc, out, err = run(cmd + ["-t", "1025"])
        check(f"{cmd[0]} -t 1025: refused, the library's limit of 1024 named",
              rc == 2 and one_line(err) and "1024" in err, f"rc={rc} err={err!r}")
    rc, out, err = run(["run", "-m", model, "-p", "hi", "-n", "1", "--temp", "0", "-t", str(cpus + 1)])
    check(f"-t {cpus + 1} on {cpus} CPUs runs with a warning",
          rc == 0 and "warning" in err and f"{cpus} CPU" in err, f"rc={rc} err={err!r}")
    rc, out, err = run(["run", "-m", model, "-p", "hi", "-n", "1", "--temp", "0", "-t", str(cpus)])
    check(f"-t {cpus} gives no thread warning", rc == 0 and "threads on" not in err, f"rc={rc} err={err!r}")


def system_checks(model):
    long_text = "word " * 400  # about 2,000 tokens of the synthetic vocabulary; the context is 64
    rc, out, err = run(["chat", "-m", model, "-c", "64", "-n", "4", "-t", "1", "--temp", "0"],
                       f"/system Be brief.\n/system {long_text}\n/system\nhello\n".encode())
    lines = out.splitlines()
    check("/system longer than the context is refused when set; the previous one stays",
          rc == 1 and "the system message is" in err and "previous system message is kept" in err
          and len(lines) >= 2 and lines[0] == "Be brief.", f"rc={rc} out={out!r} err={err!r}")
    check("... and the next message is answered", len(lines) >= 2 and "not sent" not in err,
          f"out={out!r} err={err!r}")
    rc, out, err = run(["chat", "-m", model, "-c", "64", "-t", "1", "--system", long_text], b"hello\n")
    check("--system longer than the context is refused at start",
          rc == 1 and "--system" in err and "the system message is" in err and out == "",
          f"rc={rc} out={out!r} err={err!r}")
    conv = write_bytes(os.path.join(OUT, "long-system.json"),
                       json.dumps({"system": long_text, "messages": []}).encode())
    rc, out, err = run(["chat", "-m", model, "-c", "64", "-t", "1"], f"/load {conv}\n/system\n".encode())
    check("/load of a conversation whose system message cannot fit is refused",
          rc == 1 and "the system message is" in err and "word" not in out, f"rc={rc} out={out!r} err={err!r}")


def main():
    fresh_dir(OUT)
    os.makedirs(os.path.join(OUT, "overwrite"))
    model = os.path.join(OUT, "synthetic.gguf")
    synth_gguf.write_gguf(model, ctx=256, seed=1)
    overwrite_checks(model)
    unbounded_read_checks(model)
    thread_checks(model)
    system_checks(model)
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
