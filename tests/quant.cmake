# Quantized weight formats and the quantized decode kernels.
#
# These tests link only the kernels + formats library (trimlm_kernels,
# cmake/Simd.cmake), so that the aarch64 cross build (tools/cross-neon.sh)
# can build and run them without the runtime's third-party libraries.

function(tlm_kernel_test name)
  add_executable(${name} ${ARGN})
  target_include_directories(${name} PRIVATE ${CMOCKA_INC})
  target_link_libraries(${name} PRIVATE trimlm_kernels ${CMOCKA_LIB})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS unit)
endfunction()

tlm_kernel_test(test_qformat ${CMAKE_CURRENT_SOURCE_DIR}/test_qformat.c)
tlm_kernel_test(test_qkernels ${CMAKE_CURRENT_SOURCE_DIR}/test_qkernels.c)

# The f32 kernel tests (forward.cmake) once more, linked against the kernels
# alone: what the cross build runs under qemu, where the runtime cannot link.
if(CMAKE_CROSSCOMPILING)
  tlm_kernel_test(test_kernels_standalone ${CMAKE_CURRENT_SOURCE_DIR}/test_kernels.c
                  ${CMAKE_SOURCE_DIR}/runtime/system.c)
endif()

# Formats and the scalar GEMV against an independent numpy implementation
# (and the gguf package's quantizer where installed).
tlm_py_test(qformat_ref test_qformat_ref.py $<TARGET_FILE:test_qformat>)

# GGUF blocks computed in place: every type's kernels against the f32
# dequantization (quant/ggml_types.c) and every table against the scalar one.
tlm_kernel_test(test_gguf_kernels ${CMAKE_CURRENT_SOURCE_DIR}/test_gguf_kernels.c
                ${CMAKE_SOURCE_DIR}/quant/ggml_types.c)
