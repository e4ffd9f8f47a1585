# Kernel sources per instruction set. Each ISA file is compiled with that ISA's
# flags only; the dispatcher (simd/dispatch.c) is compiled without them and
# picks a table at start-up from CPUID + XGETBV (x86) or HWCAP (Arm).
set(TLM_SIMD_SRC ${CMAKE_SOURCE_DIR}/simd/kernels_scalar.c ${CMAKE_SOURCE_DIR}/simd/kernels_gguf_scalar.c
    ${CMAKE_SOURCE_DIR}/simd/dispatch.c)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  set(TLM_SIMD_X86 ON)
  list(APPEND TLM_SIMD_SRC ${CMAKE_SOURCE_DIR}/simd/kernels_avx2.c ${CMAKE_SOURCE_DIR}/simd/kernels_avx512.c
       ${CMAKE_SOURCE_DIR}/simd/kernels_gguf_avx2.c ${CMAKE_SOURCE_DIR}/simd/kernels_gguf_avx512.c)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/simd/kernels_avx2.c
    ${CMAKE_SOURCE_DIR}/simd/kernels_gguf_avx2.c PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${CMAKE_SOURCE_DIR}/simd/kernels_avx512.c
    ${CMAKE_SOURCE_DIR}/simd/kernels_gguf_avx512.c PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx2;-mfma;-mf16c")
  add_compile_definitions(TLM_HAVE_X86_KERNELS=1)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  list(APPEND TLM_SIMD_SRC ${CMAKE_SOURCE_DIR}/simd/kernels_neon.c ${CMAKE_SOURCE_DIR}/simd/kernels_gguf_neon.c)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/simd/kernels_neon.c
    ${CMAKE_SOURCE_DIR}/simd/kernels_gguf_neon.c PROPERTIES
    COMPILE_OPTIONS "-march=armv8-a")  # SDOT kernels enable +dotprod per function
  add_compile_definitions(TLM_HAVE_NEON_KERNELS=1)
endif()

# No silent a*b+c -> fma contraction in the kernels and the formats: the
# quantized kernels promise bit-identical results on every table (explicit
# fma where one is meant), and the row quantizers must round exactly as their
# definition. GCC already does this under -std=c17; clang contracts by default.
set_property(SOURCE ${TLM_SIMD_SRC} ${CMAKE_SOURCE_DIR}/quant/qformat.c APPEND PROPERTY
             COMPILE_OPTIONS -ffp-contract=off)

# The kernels and the quantized formats alone, without the runtime or its
# third-party libraries: linked by the kernel tests, the kernel benchmark and
# the aarch64 cross build (tools/cross-neon.sh), where those libraries are
# not installed. The runtime compiles the same sources into its own objects.
add_library(trimlm_kernels STATIC ${TLM_SIMD_SRC} ${CMAKE_SOURCE_DIR}/quant/qformat.c)
target_include_directories(trimlm_kernels PUBLIC ${CMAKE_SOURCE_DIR}/simd ${CMAKE_SOURCE_DIR}/quant
                           ${CMAKE_SOURCE_DIR}/runtime ${CMAKE_SOURCE_DIR}/runtime/include)
target_link_libraries(trimlm_kernels PUBLIC m)
