#!/usr/bin/env python3
"""The repository stands alone: no tracked file reads data from a folder
beside the checkout, and the evaluation data the tests and the documented
commands use is in data/eval with its source and licence notes.

  test_standalone.py ROOT

1. Every tracked text file (git ls-files; every file under ROOT but build
   outputs when ROOT is not a git work tree) is searched for a path that
   climbs out of the repository into a sibling "shared" folder, in the forms
   a shell line, a CMake file or os.path.join would spell it. Each hit is
   printed as FILE:LINE.
2. The scanner is first run on hand-made files, one per form, so that a
   scanner that finds nothing fails here instead of passing everything.
3. data/eval: each data set folder has a SOURCE.txt naming its licence, and
   the files the tests read (TLM_EVAL_DATA in tests/CMakeLists.txt) exist.
"""
import os
import re
import subprocess
import sys
import tempfile

from testutil import check, summary

UP = ".."
SIBLING = "shared"
# The path spelled out (UP + "/" + SIBLING), or as components passed to a
# join: (UP, SIBLING) or (dirname(REPO), SIBLING, "data"), quoted either way.
PATTERNS = [
    re.compile(re.escape(UP + "/" + SIBLING) + r"\b"),
    re.compile(r"""["']""" + re.escape(UP) + r"""["']\s*,\s*["']""" + SIBLING + r"""["']"""),
    re.compile(r"""["']""" + SIBLING + r"""["']\s*,\s*["']data["']"""),
]

# Files the tests read through TLM_EVAL_DATA (tests/CMakeLists.txt).
EVAL_FILES = [
    "wikitext2/wiki.test.raw", "wikitext2/wiki.valid.raw",
    "hellaswag/hellaswag_val_first2000.jsonl", "arc_easy/arc_easy.jsonl",
    "piqa/valid.jsonl", "piqa/valid-labels.lst", "boolq/boolq.jsonl",
]
BUILD_DIRS = re.compile(r"^(build[^/]*|\.venv|\.git|bench/results)(/|$)")


def tracked_files(root):
    p = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True)
    if p.returncode == 0 and p.stdout:
        return [f for f in p.stdout.decode().split("\0") if f]
    files = []
    for dirpath, dirs, names in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirs[:] = [d for d in dirs
                   if not BUILD_DIRS.match(os.path.normpath(os.path.join(rel_dir, d)))]
        files += [os.path.normpath(os.path.join(rel_dir, n)) for n in names]
    return files


def scan(root, files):
    """FILE:LINE: text of every line that names the sibling folder."""
    hits = []
    for rel in files:
        path = os.path.join(root, rel)
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data[:8192]:
            continue  # binary (fuzz corpora, models)
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if any(p.search(line) for p in PATTERNS):
                hits.append(f"{rel}:{n}: {line.strip()[:160]}")
    return hits


def scanner_finds_each_form():
    forms = {
        "shell.sh": f"cat {UP}/{SIBLING}/data/wikitext2/wiki.test.raw\n",
        "list.cmake": f"set(D ${{CMAKE_SOURCE_DIR}}/{UP}/{SIBLING}/data)\n",
        "join.py": f'p = os.path.join(REPO, "{UP}", "{SIBLING}", "data")\n',
        "dirname.py": f'DATA = os.path.join(os.path.dirname(REPO), "{SIBLING}", "data")\n',
    }
    with tempfile.TemporaryDirectory() as d:
        for name, text in forms.items():
            with open(os.path.join(d, name), "w") as f:
                f.write("# line one\n" + text)
        with open(os.path.join(d, "clean.py"), "w") as f:
            f.write('DATA = os.path.join(REPO, "data", "eval")  # shared by the tests\n')
        hits = scan(d, sorted(forms) + ["clean.py"])
    found = sorted({h.split(":")[0] for h in hits})
    check("the scanner finds each spelling of the sibling path (line 2 of each file), "
          "and nothing in a clean file",
          found == sorted(forms) and all(h.split(":")[1] == "2" for h in hits), hits)


def main():
    root = os.path.abspath(sys.argv[1])
    scanner_finds_each_form()

    files = tracked_files(root)
    check(f"{len(files)} files to scan", len(files) > 50, files[:5])
    hits = scan(root, files)
    check("no file reads a folder beside the repository", not hits, "\n  " + "\n  ".join(hits))

    data = os.path.join(root, "data", "eval")
    for rel in EVAL_FILES:
        check(f"data/eval/{rel} is in the repository", os.path.isfile(os.path.join(data, rel)))
    sets = sorted({rel.split("/")[0] for rel in EVAL_FILES})
    for s in sets:
        src = os.path.join(data, s, "SOURCE.txt")
        text = open(src).read() if os.path.isfile(src) else ""
        check(f"data/eval/{s}/SOURCE.txt gives the origin and the licence",
              "Licence" in text and ("repo" in text.lower()), src)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
