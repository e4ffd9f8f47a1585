# `trimlm convert --to gguf` (runtime/io/gguf_writer.c): exported GGUFs read
# back with gguf-py, their values compared with the source, the .tlm of the
# same conversion and gguf-py's quantizer; pruned exports in llama.cpp's
# "deci" form run by trimlm against a numpy forward pass that skips the
# removed sublayers; bad command lines (tests/test_gguf_export.py).
tlm_py_test(gguf_export_synthetic test_gguf_export.py synthetic $<TARGET_FILE:tool_logits>)
set_tests_properties(gguf_export_synthetic PROPERTIES TIMEOUT 900)

# llama.cpp's llama-perplexity and `trimlm eval --ppl` on the synthetic exports
# (mean log-likelihood within 0.1% f32, 1% quantized) and on int8 exports of the
# default model, unpruned and with 4 attention sublayers removed (within 1%).
# Skipped (77) without llama.cpp's tools (bench/compare-llamacpp --build-only,
# which tools/test.sh runs before ctest; see tests/llamacpp.cmake).
tlm_py_test(gguf_export_llamacpp test_gguf_export.py real)
set_tests_properties(gguf_export_llamacpp PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 2400
                     SKIP_RETURN_CODE 77 PROCESSORS 2 LABELS "reference;realmodel;llamacpp")
