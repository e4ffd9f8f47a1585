# Hugging Face import: the safetensors reader (cmocka, fuzzed inputs) and
# whole model directories written by tests/py/hf_fixtures.py, loaded through
# tool_hf_check (the public loader + a dump of hyper-parameters and weight
# checksums compared with numpy).

tlm_c_test(test_safetensors test_safetensors.c)
set_tests_properties(test_safetensors PROPERTIES ENVIRONMENT "TLM_TEST_OUT=${TLM_TEST_OUT}")

add_executable(tool_hf_check tool_hf_check.c)
target_include_directories(tool_hf_check PRIVATE ${CMAKE_SOURCE_DIR}/runtime ${CMAKE_SOURCE_DIR}/quant)
target_link_libraries(tool_hf_check PRIVATE trimlm_static)

tlm_py_test(hf_import test_hf_import.py $<TARGET_FILE:tool_hf_check>)
