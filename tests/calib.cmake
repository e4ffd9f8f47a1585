# The fused calibration pass (runtime/compress/calibrate.c) and `trimlm score`.

# Runs tlm_calibrate and writes scores, statistics and the text's tokens as
# JSON; --drop-attn/--drop-mlp remove a sublayer in memory.
add_executable(tool_calib_dump ${CMAKE_CURRENT_SOURCE_DIR}/tool_calib_dump.c)
target_include_directories(tool_calib_dump PRIVATE ${CMAKE_SOURCE_DIR}/runtime)
target_link_libraries(tool_calib_dump PRIVATE trimlm_static)

# Every score and statistic on tiny synthetic models (GQA, MQA, odd widths,
# qwen2 biases, Q8_0, a removed sublayer) against the float64 numpy
# reference; 1 vs 2 threads.
tlm_py_test(calib_ref test_calib_ref.py $<TARGET_FILE:tool_calib_dump>)
set_tests_properties(calib_ref PROPERTIES TIMEOUT 300 PROCESSORS 2)

# `trimlm score` on a synthetic model: formats, the SVG plot, bad input.
tlm_py_test(calib_cli test_calib_cli.py)
set_tests_properties(calib_cli PROPERTIES TIMEOUT 300 PROCESSORS 2)

# The default model: 30 layers x 3 scores against the float64 numpy
# reference (1e-6) on 512 tokens of the built-in text, and the plot.
tlm_py_test(calib_realmodel test_calib_real.py)
set_tests_properties(calib_realmodel PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 600
                     PROCESSORS 2 LABELS "reference;realmodel")

# The same pass on a lazily loaded model (layers materialised one at a time)
# gives byte-identical output for GGUF and Hugging Face sources; a truncated
# source is refused at load, and one cut after loading gives an error. Then
# `trimlm convert` (lazy by default) writes the same .tlm and GGUF files as
# with TRIMLM_CONVERT_EAGER=1.
tlm_py_test(calib_lazy test_calib_lazy.py $<TARGET_FILE:tool_calib_dump>)
set_tests_properties(calib_lazy PROPERTIES TIMEOUT 300 PROCESSORS 2)
