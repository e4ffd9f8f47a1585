# `trimlm bench` (formats, fields, flag errors) and the trimlm-membw tool on a
# tiny synthetic model. bench/compare-llamacpp is not run here: it downloads
# and builds llama.cpp (see bench/README.md).

tlm_py_test(bench_cli test_bench.py $<TARGET_FILE:trimlm_membw>)
set_tests_properties(bench_cli PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 PROCESSORS 2)
