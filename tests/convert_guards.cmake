# What `trimlm convert`, `info` and the .tlm loader refuse, and how they
# leave files behind (tests/test_convert_guards.py, tiny models written by
# the test): drop specs checked against the model before calibration,
# formats told by their magic bytes, non-finite quantization scales and RoPE
# bases refused at load, stale temporary files, kept permissions, exit codes.
tlm_py_test(convert_guards test_convert_guards.py $<TARGET_FILE:tool_tlm_restamp>)
set_tests_properties(convert_guards PROPERTIES TIMEOUT 300)

# Recomputes a .tlm file's checksums after a test has changed bytes in it.
add_executable(tool_tlm_restamp ${CMAKE_CURRENT_SOURCE_DIR}/tool_tlm_restamp.c)
target_include_directories(tool_tlm_restamp PRIVATE ${CMAKE_SOURCE_DIR}/runtime ${CMAKE_SOURCE_DIR}/quant)
target_link_libraries(tool_tlm_restamp PRIVATE trimlm_static tlm::xxhash)
