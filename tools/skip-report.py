#!/usr/bin/env python3
"""skip-report.py — what a ctest run skipped, and whether that is allowed.

  tools/skip-report.py --allow tests/skip-allowed.txt [--stage NAME] JUNIT.xml...

Reads the JUnit files ctest writes (ctest --output-junit FILE) and finds:
  - skipped tests: status "notrun" (a test that exited with its
    SKIP_RETURN_CODE, 77, or whose requirements were missing);
  - skipped checks: a test that ran but printed a line starting with "SKIP:"
    (a part of it that could not run here, e.g. a tmpfs it could not mount).
Each is printed with the test's own reason. A skip whose test is not named
in the allow list makes the exit status 1; so does a JUnit file that is
missing or unreadable (the run did not happen). The last line is the count:
  skips[ NAME]: N tests, M checks skipped (K allowed)

The allow list has one test name per line, then its reason (why it may skip
on the CI machine); '#' starts a comment. A name listed without a reason is
an error, so that every entry says why.
"""
import argparse
import re
import sys
import xml.etree.ElementTree as ET

SKIP_LINE = re.compile(r"^SKIP:\s*(.*)$", re.M)


def read_allow(path):
    allowed = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) < 2:
                raise ValueError(f"{path}:{n}: '{parts[0]}' has no reason")
            allowed[parts[0]] = parts[1]
    return allowed


def skips_of(junit_path):
    """[(test, kind, reason)], kind 'test' or 'check'."""
    root = ET.parse(junit_path).getroot()
    found = []
    for case in root.iter("testcase"):
        name = case.get("name")
        out = case.findtext("system-out") or ""
        reasons = [r.strip() for r in SKIP_LINE.findall(out)]
        if case.get("status") == "notrun" or case.find("skipped") is not None:
            msg = case.find("skipped")
            why = reasons[0] if reasons else (out.strip().splitlines() or [""])[-1]
            found.append((name, "test", why or (msg.get("message", "") if msg is not None else "")))
        elif case.get("status") == "run":
            found += [(name, "check", r) for r in reasons]
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--allow", required=True, help="the allow list (tests/skip-allowed.txt)")
    ap.add_argument("--stage", default="", help="name printed in the count line")
    ap.add_argument("junit", nargs="+")
    a = ap.parse_args()
    try:
        allowed = read_allow(a.allow)
    except (OSError, ValueError) as e:
        print(f"skip-report: {e}", file=sys.stderr)
        return 1
    bad = False
    found = []
    for path in a.junit:
        try:
            found += skips_of(path)
        except (OSError, ET.ParseError) as e:
            print(f"skip-report: {path}: cannot read the test results ({e})", file=sys.stderr)
            bad = True
    n_allowed = 0
    for name, kind, why in found:
        ok = name in allowed
        n_allowed += ok
        bad |= not ok
        tag = "allowed" if ok else "NOT ALLOWED"
        print(f"skipped {kind} of {name}: {why} [{tag}{': ' + allowed[name] if ok else ''}]")
    n_tests = sum(1 for f in found if f[1] == "test")
    stage = f" {a.stage}" if a.stage else ""
    print(f"skips{stage}: {n_tests} tests, {len(found) - n_tests} checks skipped ({n_allowed} allowed)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
