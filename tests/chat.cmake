# `trimlm chat`: scripted through a pipe on a synthetic model (replies against
# `trimlm run`, incremental prefill, /save and /load, overflow, bad input), and
# driven in a real terminal with tmux (line editing, paste, history, Ctrl-C,
# Ctrl-D), on a synthetic model and on the default model.

tlm_py_test(chat_scripted test_chat.py)
set_tests_properties(chat_scripted PROPERTIES TIMEOUT 600)

tlm_py_test(chat_tmux_synthetic test_chat_tmux.py synthetic)
set_tests_properties(chat_tmux_synthetic PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)

tlm_py_test(chat_tmux_real test_chat_tmux.py real)
set_tests_properties(chat_tmux_real PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600
                     FIXTURES_REQUIRED realmodel LABELS "reference;realmodel" PROCESSORS 2)
