# The repository itself: nothing reads a folder beside the checkout, and the
# evaluation data the tests use is in data/eval with its source and licence
# notes (tests/test_standalone.py).
tlm_py_test(repo_standalone test_standalone.py ${CMAKE_SOURCE_DIR})
set_tests_properties(repo_standalone PROPERTIES LABELS "repo" TIMEOUT 120)
