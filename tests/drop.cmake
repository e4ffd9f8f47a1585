# Dropping sublayers and activation-aware quantization at conversion
# (runtime/compress/drop.c, quant/awq.c, `trimlm convert --drop/--drop-list/--calib`).

# AWQ against round-to-nearest on a matrix with outlier channels, exact
# folding of the scales (attention with GQA, MLP), the drop policies' ranking.
tlm_c_test(test_awq ${CMAKE_CURRENT_SOURCE_DIR}/test_awq.c)
set_tests_properties(test_awq PROPERTIES TIMEOUT 120)

# Tiny GGUF models: the dropped sublayers' tensors (and bytes) are absent,
# logits equal a numpy forward pass that skips them, KV bytes shrink, the
# policies choose what an independent ranking of the stored scores chooses,
# bad specs exit 2, and a calibrated int4/int8 file stays close to f32.
tlm_py_test(drop_synthetic test_drop.py synthetic $<TARGET_FILE:tool_logits>)
set_tests_properties(drop_synthetic PROPERTIES TIMEOUT 600 PROCESSORS 2)

# SmolLM2 int4: calibrated (4096 tokens) has lower perplexity than
# round-to-nearest on the first 20000 bytes of WikiText-2 test.
tlm_py_test(drop_real test_drop.py real $<TARGET_FILE:tool_logits>)
set_tests_properties(drop_real PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 1200
                     PROCESSORS 2 LABELS "reference;realmodel")
