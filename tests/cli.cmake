# The trimlm command line: errors and exit codes, chat templates (against
# Jinja2), pulling models into the cache, perplexity (against numpy), and the
# fixture that makes the real default model available to every test that
# declares FIXTURES_REQUIRED realmodel.

# Renders conversations with trimlm's chat templates for the Jinja2 comparison.
add_executable(tool_chat ${CMAKE_CURRENT_SOURCE_DIR}/tool_chat.c)
target_include_directories(tool_chat PRIVATE ${CMAKE_SOURCE_DIR}/runtime)
target_link_libraries(tool_chat PRIVATE trimlm_static)

# `trimlm pull` of the default model: downloads it unless the cache has it.
add_test(NAME pull_default_model COMMAND trimlm_cli pull)
set_tests_properties(pull_default_model PROPERTIES FIXTURES_SETUP realmodel TIMEOUT 1200
                     LABELS "realmodel")

tlm_py_test(cli_errors test_cli.py errors)
tlm_py_test(cli_run_real test_cli.py real)
set_tests_properties(cli_run_real PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 300
                     LABELS "reference;realmodel")

tlm_py_test(chat_templates test_chat_template.py synthetic $<TARGET_FILE:tool_chat>)
tlm_py_test(chat_template_smollm2 test_chat_template.py real $<TARGET_FILE:tool_chat>)
set_tests_properties(chat_template_smollm2 PROPERTIES FIXTURES_REQUIRED realmodel
                     LABELS "reference;realmodel")

tlm_py_test(pull_file_url test_pull.py)
set_tests_properties(pull_file_url PROPERTIES TIMEOUT 120)

tlm_py_test(eval_ppl_synthetic test_eval_ppl.py synthetic)
set_tests_properties(eval_ppl_synthetic PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
tlm_py_test(eval_ppl_real test_eval_ppl.py real)
set_tests_properties(eval_ppl_real PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 900
                     LABELS "reference;realmodel")

# Messages stay plain text inside the chat template: only its markup becomes
# special tokens (against Hugging Face tokenizers on the default model).
tlm_py_test(chat_special_tokens test_chat_special.py $<TARGET_FILE:tool_chat>)
set_tests_properties(chat_special_tokens PROPERTIES FIXTURES_REQUIRED realmodel TIMEOUT 300
                     LABELS "reference;realmodel")
