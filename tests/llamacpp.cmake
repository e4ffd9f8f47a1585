# Comparisons with llama.cpp (label llamacpp), on the tools that
# bench/compare-llamacpp builds from the pinned llama.cpp source into
# ${XDG_CACHE_HOME:-~/.cache}/trimlm/llama.cpp-<version>/bin (tools/test.sh
# builds them before ctest; $TLM_LLAMACPP_BIN points elsewhere). Without
# them these tests exit 77 (skipped), which tools/test.sh counts as a failure
# (tests/skip-allowed.txt).
#
#   gguf_export_llamacpp (gguf_export.cmake)  trimlm's GGUF exports load and
#       run in llama-perplexity with the same perplexity as trimlm's
#   llamacpp_ppl_default  README's perplexity claim by README's command:
#       `bench/compare-llamacpp --ppl`, default model, first 100,000 bytes of
#       WikiText-2 test, ctx 512, trimlm within 1 % of llama-perplexity
#
# The sanitizer stage leaves them out (tools/sanitize.sh): what they add to
# the other tests is llama.cpp's numbers, not trimlm code paths.
tlm_py_test(llamacpp_ppl_default test_llamacpp_ppl.py)
set_tests_properties(llamacpp_ppl_default PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 1800
                     SKIP_RETURN_CODE 77 PROCESSORS 2 LABELS "reference;realmodel;llamacpp")
