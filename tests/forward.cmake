# Forward pass, KV cache, sampler and kernels.

tlm_c_test(test_kernels ${CMAKE_CURRENT_SOURCE_DIR}/test_kernels.c)
tlm_c_test(test_sampler ${CMAKE_CURRENT_SOURCE_DIR}/test_sampler.c)
tlm_c_test(test_context ${CMAKE_CURRENT_SOURCE_DIR}/test_context.c)

# Runs a model through the public API and writes logits / greedy tokens for
# the Python reference comparisons.
add_executable(tool_logits ${CMAKE_CURRENT_SOURCE_DIR}/tool_logits.c)
target_link_libraries(tool_logits PRIVATE trimlm_static)

# Tiny synthetic models (GGUF llama/qwen2, HF llama) against the numpy
# reference, 1 and 2 threads.
tlm_py_test(forward_ref test_forward_ref.py $<TARGET_FILE:tool_logits>)

# Gemma 3 (sliding-window local layers, soft-capping, GQA) against its own
# numpy reference.
tlm_py_test(gemma3_ref test_gemma3_ref.py $<TARGET_FILE:tool_logits>)

# Greedy continuations of the real default model against the numpy reference.
tlm_py_test(realmodel_greedy test_realmodel_greedy.py $<TARGET_FILE:tool_logits>)
set_tests_properties(realmodel_greedy PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 300 LABELS "reference;realmodel")

# The f16 and int8 KV caches against the f32 cache on the same synthetic
# models (modes, threads, scalar kernels).
tlm_py_test(forward_kv test_forward_kv.py $<TARGET_FILE:tool_logits>)

# The default model's GGUF matrices used in place (int8-quantized inputs)
# against the f32-widened load and the numpy reference: logits and perplexity.
tlm_py_test(gguf_inplace_real test_gguf_inplace.py $<TARGET_FILE:tool_logits>)
set_tests_properties(gguf_inplace_real PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 900
                     LABELS "reference;realmodel")

# The real Gemma 3 270M, pulled into the cache first (253 MB, once; its use
# is subject to the Gemma terms of use): greedy tokens and prompt logits
# against the numpy Gemma 3 reference.
add_test(NAME pull_gemma3 COMMAND trimlm_cli pull gemma-3-270m)
set_tests_properties(pull_gemma3 PROPERTIES FIXTURES_SETUP gemma3model TIMEOUT 1200
                     LABELS "realmodel")
tlm_py_test(gemma3_real test_gemma3_real.py $<TARGET_FILE:tool_logits> $<TARGET_FILE:tool_tokenize>)
set_tests_properties(gemma3_real PROPERTIES FIXTURES_REQUIRED gemma3model TIMEOUT 900 PROCESSORS 2
                     LABELS "reference;realmodel")
