# `trimlm eval --mc` and `--kld` against independent numpy computations on
# tiny synthetic models, and --mc on the default model against the same
# numpy reference (real-model tier).
# (--ppl's tests are in cli.cmake.)

tlm_py_test(eval_mc_synthetic test_eval_mc.py synthetic)
set_tests_properties(eval_mc_synthetic PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
tlm_py_test(eval_kld_synthetic test_eval_kld.py)
set_tests_properties(eval_kld_synthetic PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
tlm_py_test(eval_mc_real test_eval_mc.py real)
set_tests_properties(eval_mc_real PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 900)
