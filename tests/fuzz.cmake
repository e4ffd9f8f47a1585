# Fuzzing (tests/fuzz/): a libFuzzer entry point for each parser of untrusted
# bytes — GGUF reader, GGUF and .tlm model loaders, safetensors header and
# index, config.json,
# tokenizer.json, tokenizer_encode() itself, the chat template a model
# file carries, and the CLI's readers of a saved chat (/load), of
# `eval --mc` items and PIQA labels, and of the model registry file.
#
# Every build compiles each target with a small replay driver (no libFuzzer)
# and a `unit` test that runs the seed corpus and every input that once
# crashed (tests/fuzz/regressions/<target>/) through it. With -DTLM_FUZZ=ON
# and clang (tools/fuzz.sh configures that) the libFuzzer binaries are built
# too. With TLM_FUZZ_SECONDS set in the environment at configure time,
# `fuzz_smoke` runs tools/fuzz.sh for that many seconds per target.

option(TLM_FUZZ "build the libFuzzer binaries of tests/fuzz (clang only; see tools/fuzz.sh)" OFF)

set(TLM_FUZZ_TARGETS fuzz_gguf fuzz_safetensors fuzz_safetensors_index fuzz_hf_config
    fuzz_tokenizer_json fuzz_tokenize fuzz_model_gguf fuzz_model_tlm fuzz_chat_template
    fuzz_chat_conv fuzz_eval_mc fuzz_registry)
# The targets whose parser lives with the CLI (tools/): they link its
# trimlm_cli_parse library (CMakeLists.txt) instead of the commands.
set(TLM_FUZZ_CLI_TARGETS fuzz_chat_conv fuzz_eval_mc fuzz_registry)
set(TLM_FUZZ_DIR ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)

if(TLM_FUZZ AND NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "trimlm: TLM_FUZZ needs clang (libFuzzer); configure with CC=clang or run tools/fuzz.sh")
endif()

foreach(target ${TLM_FUZZ_TARGETS})
  foreach(kind replay fuzz)
    if(kind STREQUAL "replay")
      set(exe replay_${target})
      add_executable(${exe} ${TLM_FUZZ_DIR}/${target}.c ${TLM_FUZZ_DIR}/replay_main.c)
    elseif(TLM_FUZZ)
      set(exe ${target})
      add_executable(${exe} ${TLM_FUZZ_DIR}/${target}.c)
      target_compile_options(${exe} PRIVATE -fsanitize=fuzzer)
      target_link_options(${exe} PRIVATE -fsanitize=fuzzer)
    else()
      continue()
    endif()
    target_include_directories(${exe} PRIVATE ${CMAKE_SOURCE_DIR}/runtime ${CMAKE_SOURCE_DIR}/quant
                               ${TLM_FUZZ_DIR})
    target_compile_definitions(${exe} PRIVATE TLM_FUZZ_DATA_DIR="${TLM_FUZZ_DIR}/data")
    if(target IN_LIST TLM_FUZZ_CLI_TARGETS)
      target_link_libraries(${exe} PRIVATE trimlm_cli_parse)
    endif()
    target_link_libraries(${exe} PRIVATE trimlm_static)
  endforeach()

  add_test(NAME fuzz_replay_${target}
           COMMAND replay_${target} ${TLM_FUZZ_DIR}/corpus/${target} ${TLM_FUZZ_DIR}/regressions/${target})
  set_tests_properties(fuzz_replay_${target} PROPERTIES LABELS unit ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()

if(DEFINED ENV{TLM_FUZZ_SECONDS})
  list(LENGTH TLM_FUZZ_TARGETS n_fuzz_targets)
  math(EXPR fuzz_timeout "$ENV{TLM_FUZZ_SECONDS} * ${n_fuzz_targets} + 900")
  add_test(NAME fuzz_smoke COMMAND ${CMAKE_SOURCE_DIR}/tools/fuzz.sh $ENV{TLM_FUZZ_SECONDS})
  set_tests_properties(fuzz_smoke PROPERTIES LABELS fuzz TIMEOUT ${fuzz_timeout})
endif()
