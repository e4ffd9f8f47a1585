# The repository itself: nothing reads a folder beside the checkout, and the
# evaluation data the tests use is in data/eval with its source and licence
# notes (tests/test_standalone.py).
tlm_py_test(repo_standalone test_standalone.py ${CMAKE_SOURCE_DIR})
set_tests_properties(repo_standalone PROPERTIES LABELS "repo" TIMEOUT 120)

# tools/skip-report.py, with which tools/test.sh fails a run whose tests
# skipped without an entry in tests/skip-allowed.txt (tests/test_skip_report.py).
tlm_py_test(repo_skip_report test_skip_report.py ${CMAKE_CTEST_COMMAND})
set_tests_properties(repo_skip_report PROPERTIES LABELS "repo" TIMEOUT 120)
