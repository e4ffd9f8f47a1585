# Tokenizer: byte-level and SentencePiece-style BPE from GGUF and
# tokenizer.json, checked against the Hugging Face `tokenizers` package.

# Runs the tokenizer over an escaped corpus for the Python comparisons.
add_executable(tool_tokenize ${CMAKE_CURRENT_SOURCE_DIR}/tool_tokenize.c)
target_include_directories(tool_tokenize PRIVATE ${CMAKE_SOURCE_DIR}/runtime)
target_link_libraries(tool_tokenize PRIVATE trimlm_static)

# Bad tokenizer.json files, UTF-8 repair, random bytes through encode.
tlm_c_test(test_tokenizer test_tokenizer.c)
set_tests_properties(test_tokenizer PROPERTIES ENVIRONMENT "TLM_TEST_OUT=${TLM_TEST_OUT}")

set(TLM_TOK_CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/data/tokenizer_corpus.txt)

# Synthetic vocabularies trained in the test: SentencePiece-style BPE as
# tokenizer.json and as a GGUF "llama" vocabulary, and a Llama-3-style
# byte-level BPE.
tlm_py_test(tokenizer_synthetic_spm test_tokenizer_ref.py spm $<TARGET_FILE:tool_tokenize> ${TLM_TOK_CORPUS})
tlm_py_test(tokenizer_synthetic_llama3 test_tokenizer_ref.py llama3 $<TARGET_FILE:tool_tokenize> ${TLM_TOK_CORPUS})
set_tests_properties(tokenizer_synthetic_spm tokenizer_synthetic_llama3 PROPERTIES TIMEOUT 300)

# SmolLM2's real vocabulary (GGUF and the same as tokenizer.json).
tlm_py_test(tokenizer_smollm2 test_tokenizer_ref.py smollm2 $<TARGET_FILE:tool_tokenize> ${TLM_TOK_CORPUS})
set_tests_properties(tokenizer_smollm2 PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 300
                     LABELS "reference;realmodel")

# The detokenizer's streaming UTF-8 repair against Python's errors="replace".
tlm_py_test(utf8_stream test_utf8_stream.py $<TARGET_FILE:tool_tokenize>)
