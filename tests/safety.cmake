# The user's files: no output replaces an input (path, symlink, hard link),
# text inputs that are not regular files are refused, the thread limit, and
# a system message that cannot fit the context.
tlm_py_test(file_safety test_file_safety.py)
set_tests_properties(file_safety PROPERTIES TIMEOUT 300)
