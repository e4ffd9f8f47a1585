# int8 / int4 models end to end (tests/test_quant_model.py): `trimlm convert
# --type int8|int4`, the .tlm reader mapping packed tensors, and prefill /
# decode on them against a numpy reference that quantizes the same weights.
tlm_py_test(quant_model_synthetic test_quant_model.py synthetic $<TARGET_FILE:tool_logits>)
set_tests_properties(quant_model_synthetic PROPERTIES TIMEOUT 600 PROCESSORS 2)

# SmolLM2 converted to int8 and int4: perplexity on the first 100 kB of
# WikiText-2 test (8 chunks of 512 tokens) against the f32 GGUF path, and a
# greedy answer.
tlm_py_test(quant_model_real test_quant_model.py real $<TARGET_FILE:tool_logits>)
set_tests_properties(quant_model_real PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 900
                     PROCESSORS 2 LABELS "reference;realmodel")
