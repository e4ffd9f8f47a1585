#!/usr/bin/env python3
"""tools/skip-report.py, which makes a skipped test fail CI unless it is in
tests/skip-allowed.txt.

  test_skip_report.py CTEST

1. A real ctest run (a throw-away project: one test that passes, one that
   exits 77 under SKIP_RETURN_CODE, one that passes but prints a "SKIP:"
   line, one that fails) written as JUnit by this ctest, then read by the
   report: both skips are found with their reasons and fail the report;
   listed in the allow list they pass it; the failing test is no skip.
2. An allow-list entry without a reason, and a missing JUnit file, fail it.
3. The repository's own allow list parses and every entry has a reason.
"""
import os
import subprocess
import sys
import tempfile

from testutil import check, summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(REPO, "tools", "skip-report.py")

PROJECT = """cmake_minimum_required(VERSION 3.16)
project(skips NONE)
enable_testing()
add_test(NAME passes COMMAND sh -c "echo ok; exit 0")
add_test(NAME skips_whole COMMAND sh -c "echo 'SKIP: no widget here'; exit 77")
set_tests_properties(skips_whole PROPERTIES SKIP_RETURN_CODE 77)
add_test(NAME skips_part COMMAND sh -c "echo 'ok   one'; echo 'SKIP: the tmpfs check'; exit 0")
add_test(NAME fails COMMAND sh -c "echo 'FAIL x'; exit 1")
"""


def report(allow, *junit):
    p = subprocess.run([sys.executable, REPORT, "--allow", allow, "--stage", "t", *junit],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def main():
    ctest = sys.argv[1]
    cmake = os.path.join(os.path.dirname(ctest), "cmake")
    with tempfile.TemporaryDirectory() as d:
        src, build = os.path.join(d, "src"), os.path.join(d, "build")
        os.makedirs(src)
        with open(os.path.join(src, "CMakeLists.txt"), "w") as f:
            f.write(PROJECT)
        p = subprocess.run([cmake, "-S", src, "-B", build], capture_output=True, text=True)
        check("the throw-away project configures", p.returncode == 0, p.stderr)
        junit = os.path.join(d, "junit.xml")
        p = subprocess.run([ctest, "--test-dir", build, "--output-junit", junit],
                           capture_output=True, text=True)
        check("ctest reports the failing test", p.returncode != 0 and os.path.isfile(junit), p.stdout)

        empty = os.path.join(d, "empty.txt")
        with open(empty, "w") as f:
            f.write("# nothing may skip\n")
        rc, out = report(empty, junit)
        check("unlisted skips fail the report", rc == 1, out)
        check("the whole-test skip is named with its reason",
              "skipped test of skips_whole: no widget here [NOT ALLOWED]" in out, out)
        check("the skipped check is named with its reason",
              "skipped check of skips_part: the tmpfs check [NOT ALLOWED]" in out, out)
        check("passing and failing tests are no skips", "of passes" not in out and "of fails" not in out, out)
        check("the count line", "skips t: 1 tests, 1 checks skipped (0 allowed)" in out, out)

        listed = os.path.join(d, "listed.txt")
        with open(listed, "w") as f:
            f.write("skips_whole  no widget on the CI machine  # comment\nskips_part the tmpfs\n")
        rc, out = report(listed, junit)
        check("listed skips pass the report", rc == 0, out)
        check("... and are still counted", "skips t: 1 tests, 1 checks skipped (2 allowed)" in out, out)

        one = os.path.join(d, "one.txt")
        with open(one, "w") as f:
            f.write("skips_whole no widget\n")
        rc, out = report(one, junit)
        check("one listed, one not: fails", rc == 1 and "skips_part: the tmpfs check [NOT ALLOWED]" in out, out)

        bare = os.path.join(d, "bare.txt")
        with open(bare, "w") as f:
            f.write("skips_whole\n")
        rc, out = report(bare, junit)
        check("an entry without a reason is refused", rc == 1 and "has no reason" in out, out)

        rc, out = report(empty, os.path.join(d, "missing.xml"))
        check("a missing JUnit file fails the report", rc == 1 and "cannot read" in out, out)

    rc, out = report(os.path.join(REPO, "tests", "skip-allowed.txt"), os.devnull)
    check("tests/skip-allowed.txt parses (every entry has a reason)", "has no reason" not in out, out)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
