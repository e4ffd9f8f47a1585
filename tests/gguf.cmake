# GGUF reader, GGML dequantizers and the GGUF model loader.

# Tools that expose the reader, the dequantizers and the loader to the
# Python reference tests.
foreach(tool tool_dequant tool_gguf_load)
  add_executable(${tool} ${tool}.c)
  target_include_directories(${tool} PRIVATE ${CMAKE_SOURCE_DIR}/runtime ${CMAKE_SOURCE_DIR}/quant)
  target_link_libraries(${tool} PRIVATE trimlm_static)
endforeach()

# The reader on hand-built files: valid v2/v3, every kind of damage, byte flips.
tlm_c_test(test_gguf test_gguf.c)
set_tests_properties(test_gguf PROPERTIES ENVIRONMENT "TLM_TEST_OUT=${TLM_TEST_OUT}")

# Every dequantizer against the gguf package on random blocks, and the reader
# against gguf.GGUFReader on a file written by gguf.GGUFWriter.
tlm_py_test(gguf_dequant_ref test_dequant_ref.py raw $<TARGET_FILE:tool_dequant>)
tlm_py_test(gguf_reader_ref test_dequant_ref.py synthetic $<TARGET_FILE:tool_dequant>)

# Model loading from GGUF: tiny synthetic llama/qwen2 files (weights compared
# with the gguf package) and bad inputs that must give clear errors.
tlm_py_test(gguf_model_load test_model_gguf.py $<TARGET_FILE:tool_gguf_load>)

# The real model: a sample of its tensors dequantized, and the whole model
# loaded and compared.
tlm_py_test(gguf_dequant_realmodel test_dequant_ref.py model $<TARGET_FILE:tool_dequant>)
tlm_py_test(gguf_model_load_realmodel test_model_gguf.py $<TARGET_FILE:tool_gguf_load> --real)
set_tests_properties(gguf_dequant_realmodel gguf_model_load_realmodel PROPERTIES
                     FIXTURES_REQUIRED realmodel TIMEOUT 300 LABELS "reference;realmodel")
