# What `trimlm convert`, `info` and the .tlm loader refuse, and how they
# leave files behind (tests/test_convert_guards.py, tiny models written by
# the test): drop specs checked against the model before calibration,
# formats told by their magic bytes, non-finite quantization scales and RoPE
# bases refused at load, stale temporary files, kept permissions, exit codes.
tlm_py_test(convert_guards test_convert_guards.py)
set_tests_properties(convert_guards PROPERTIES TIMEOUT 300)
