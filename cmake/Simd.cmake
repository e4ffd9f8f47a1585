# Kernel sources per instruction set. Each ISA file is compiled with that ISA's
# flags only; the dispatcher (simd/dispatch.c) is compiled without them and
# picks a table at start-up from CPUID + XGETBV (x86) or HWCAP (Arm).
set(TLM_SIMD_SRC ${CMAKE_SOURCE_DIR}/simd/kernels_scalar.c ${CMAKE_SOURCE_DIR}/simd/dispatch.c)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  set(TLM_SIMD_X86 ON)
  list(APPEND TLM_SIMD_SRC ${CMAKE_SOURCE_DIR}/simd/kernels_avx2.c ${CMAKE_SOURCE_DIR}/simd/kernels_avx512.c)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/simd/kernels_avx2.c PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${CMAKE_SOURCE_DIR}/simd/kernels_avx512.c PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx2;-mfma;-mf16c")
  add_compile_definitions(TLM_HAVE_X86_KERNELS=1)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  list(APPEND TLM_SIMD_SRC ${CMAKE_SOURCE_DIR}/simd/kernels_neon.c)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/simd/kernels_neon.c PROPERTIES
    COMPILE_OPTIONS "-march=armv8.2-a+dotprod+fp16")
  add_compile_definitions(TLM_HAVE_NEON_KERNELS=1)
endif()
