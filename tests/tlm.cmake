# trimlm's own model file (.tlm): the writer and reader on models built in
# memory (round trips, absent sublayers, damaged and truncated files), and
# `trimlm convert` / `trimlm info` on GGUF and Hugging Face sources compared
# with the source's own logits and tokens (tests/test_convert.py).

tlm_c_test(test_tlm_format ${CMAKE_CURRENT_SOURCE_DIR}/test_tlm_format.c)
# the tensor table every loader and writer walks (runtime/tensor_spec.h)
tlm_c_test(test_tensor_spec ${CMAKE_CURRENT_SOURCE_DIR}/test_tensor_spec.c)
set_tests_properties(test_tlm_format PROPERTIES ENVIRONMENT "TLM_TEST_OUT=${TLM_TEST_OUT}" TIMEOUT 300)

# convert + info end to end: tiny GGUF (llama, qwen2, Q8_0) and Hugging Face
# models; tokens are compared through libtrimlm.so with ctypes.
tlm_py_test(convert_synthetic test_convert.py synthetic $<TARGET_FILE:tool_logits>)
set_tests_properties(convert_synthetic PROPERTIES TIMEOUT 600)

# The default model converted to f32 (logits bit-identical to the GGUF path)
# and f16 (within 0.25, same argmax), token ids, info, and Ctrl-C.
tlm_py_test(convert_realmodel test_convert.py real $<TARGET_FILE:tool_logits>)
set_tests_properties(convert_realmodel PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 900
                     PROCESSORS 2 LABELS "reference;realmodel")
