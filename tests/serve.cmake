# `trimlm serve` with OpenAI's Python client: on synthetic models (answers
# against `trimlm run`, streaming, stop strings, seeds, concurrency, bad input,
# the API key, the queue, vanishing clients, the time limit) and on the
# default model (a greedy answer against `trimlm run`).

tlm_py_test(serve_synthetic test_serve.py synthetic)
set_tests_properties(serve_synthetic PROPERTIES TIMEOUT 600 LABELS "reference;serve")

tlm_py_test(serve_real test_serve.py real)
set_tests_properties(serve_real PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600
                     FIXTURES_REQUIRED realmodel LABELS "reference;realmodel")

# The chat page at / in a headless Chromium (Selenium): headers and CSP,
# streamed answers against OpenAI's client, the API key, stop; it leaves a
# screenshot in $TLM_TEST_OUT/serve_webui/chat.png.
tlm_py_test(serve_webui test_serve_webui.py)
set_tests_properties(serve_webui PROPERTIES TIMEOUT 300 LABELS "reference;serve")

# The scale-out recipe (tools/serve-nginx.conf): nginx in front of two
# servers; one killed, the later requests answered by the other.
tlm_py_test(serve_nginx test_serve_nginx.py)
set_tests_properties(serve_nginx PROPERTIES TIMEOUT 300 LABELS "reference;serve")
