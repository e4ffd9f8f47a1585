"""The chat page of `trimlm serve` (GET /), in a headless Chromium driven by
Selenium, against a server on a synthetic model.

  - the page's headers: HTML, a Content-Security-Policy that refuses anything
    but the page's own style and script (their hashes, computed here from
    tools/cli/webui/index.html) and calls to its own origin; the page needs
    no API key while the API does
  - in the browser: the page's SSE parser on events cut at awkward places;
    text typed into the page shown as text (no markup); a request without the
    key answered with the 401 in the page; with the key, a message typed and
    sent gets the streamed answer, equal to OpenAI's client's answer to the
    same messages (greedy); a second turn sends the history; a reload keeps
    the conversation (localStorage) and the key (sessionStorage only);
    stop, pressed mid-stream, ends the answer and the server frees the slot
  - a screenshot, $TLM_TEST_OUT/serve_webui/chat.png, for a person to look at
"""
import base64
import hashlib
import html.parser
import os
import re
import shutil
import sys
import time

import synth_gguf
from test_serve import Server
from testutil import check, fail, fresh_dir, scratch_dir, summary

OUT = scratch_dir("serve_webui")
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "cli", "webui", "index.html")
KEY = "open-sesame"


class ElementText(html.parser.HTMLParser):
    """The text of each element named tag, as an HTML parser (not a string
    search) sees it: comments that mention the tag do not count."""

    def __init__(self, tag):
        super().__init__(convert_charrefs=False)
        self.tag, self.inside, self.found = tag, False, []

    def handle_starttag(self, tag, attrs):
        if tag == self.tag:
            self.inside = True
            self.found.append("")

    def handle_endtag(self, tag):
        if tag == self.tag:
            self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.found[-1] += data


def csp_hash(page, tag):
    p = ElementText(tag)
    p.feed(page)
    assert len(p.found) == 1, f"{len(p.found)} <{tag}> elements in the page"
    return "'sha256-" + base64.b64encode(hashlib.sha256(p.found[0].encode()).digest()).decode() + "'"


def test_headers(srv):
    with open(PAGE, "rb") as f:
        source = f.read()
    page = source.decode()
    status, hdr, body = srv.request("GET", "/")
    check("GET / answers the page, without the API key",
          status == 200 and body == source, f"status={status} len={len(body)}")
    check("the page is sent as UTF-8 HTML, not sniffed",
          hdr.get("content-type") == "text/html; charset=utf-8" and hdr.get("x-content-type-options") == "nosniff",
          f"{hdr}")
    csp = {d.split()[0]: d.split()[1:] for d in hdr.get("content-security-policy", "").split(";") if d.strip()}
    check("the CSP refuses everything by default and allows the page's own style and script by hash",
          csp.get("default-src") == ["'none'"] and csp.get("script-src") == [csp_hash(page, "script")] and
          csp.get("style-src") == [csp_hash(page, "style")] and csp.get("connect-src") == ["'self'"] and
          csp.get("frame-ancestors") == ["'none'"], f"{csp}")
    check("the CSP names no other origin", not re.search(r"https?:|\*|unsafe", hdr.get("content-security-policy", "")),
          hdr.get("content-security-policy"))
    check("the page loads nothing from elsewhere and never sets innerHTML",
          not re.search(r"https?://|innerHTML|outerHTML|insertAdjacentHTML|document\.write", page))
    status, hdr, body = srv.request("HEAD", "/")
    check("HEAD / answers the headers", status == 200 and body == b"" and
          hdr.get("content-length") == str(len(source)), f"{status} {hdr}")
    status, _, _ = srv.request("POST", "/", b"{}")
    check("POST / is 405", status == 405, f"{status}")
    status, _, _ = srv.request("GET", "/v1/models")
    check("the API still needs the key", status == 401, f"{status}")


def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        fail("selenium is missing (tools/install-deps.sh installs it)")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        fail("chromium or chromedriver is missing (tools/install-deps.sh installs chromium, chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1000,800", "--user-data-dir=" + fresh_dir(os.path.join(OUT, "profile"))]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The browser is not ours to sanitize: under tools/sanitize.sh the
    # environment preloads the AddressSanitizer runtime, which aborts
    # chromedriver; the server under test keeps it.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")}
    return webdriver.Chrome(service=Service(driver, env=env), options=opts)


def wait_for(pred, timeout=60, what="a condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def boxes(d):
    """[(class, text, note, number of elements inside the text)] of the conversation."""
    return d.execute_script("""
        return Array.from(document.querySelectorAll('#log .msg')).map(function (b) {
            var t = b.querySelector('.text');
            return [b.className, t.textContent, b.querySelector('.note').textContent, t.children.length];
        });""")


def send(d, text):
    from selenium.webdriver.common.keys import Keys
    box = d.find_element("id", "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def idle(d):
    return d.execute_script("return !document.getElementById('send').disabled")


def test_sse_parser(d):
    # each case: the chunks as they arrive, and the data of the events
    cases = [
        (["data: a\n\n"], ["a"]),
        (["data: a\r", "\n\r\n"], ["a"]),                      # \r\n cut between chunks
        (["da", "ta:b\n", "\n"], ["b"]),                       # no space after the colon
        ([": keep-alive\n\n", "data: x\ndata: y\n\n"], ["x\ny"]),
        (["data: 1\r\rdata: 2\n\ndata: 3"], ["1", "2"]),      # the last one not ended yet
        (["event: e\nid: 7\ndata: z\n\n"], ["z"]),
        (["data: [DONE]\n\n"], ["[DONE]"]),
    ]
    for chunks, want in cases:
        got = d.execute_script("""
            var p = new SseParser(), out = [];
            arguments[0].forEach(function (c) { out = out.concat(p.push(c)); });
            return out;""", chunks)
        check(f"the page's SSE parser: {chunks!r}", got == want, f"got {got!r}")
    # a whole answer cut into single characters
    stream = 'data: {"choices":[{"delta":{"content":"Hi <b>"}}]}\n\n: keep-alive\n\n' \
             'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    got = d.execute_script("""
        var p = new SseParser(), out = [];
        for (var i = 0; i < arguments[0].length; i++) out = out.concat(p.push(arguments[0][i]));
        return out.map(readChatEvent);""", stream)
    check("the page reads a chat stream fed one character at a time",
          got == [{"text": "Hi <b>"}, {"finish": "stop"}, {"done": True}], f"{got}")


def openai_answer(srv, msgs, max_tokens):
    """(content, the note the page should give it) of OpenAI's client's answer."""
    r = srv.client(key=KEY).chat.completions.create(model="m", messages=msgs, temperature=0, max_tokens=max_tokens)
    note = f"{r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} tokens"
    if r.choices[0].finish_reason == "length":
        note = "cut at max tokens · " + note
    return r.choices[0].message.content, note


def test_page(srv, d):
    d.get(srv.url + "/")
    wait_for(lambda: d.execute_script("return typeof SseParser === 'function'"), 20, "the page's script")
    test_sse_parser(d)

    # without the key: the markup typed stays text, and the 401 shows in the page
    hostile = '<img src=x onerror="window.pwned=1"><b>bold</b> & co'
    send(d, hostile)
    wait_for(lambda: len(boxes(d)) == 2 and idle(d), 30, "the answer to a request without the key")
    b = boxes(d)
    check("typed markup is shown as text", b[0][1] == hostile and b[0][3] == 0 and
          not d.execute_script("return window.pwned === 1 || document.querySelector('#log img, #log b') !== null"),
          f"{b[0]}")
    check("a request without the API key shows the server's 401 in the page",
          b[1][0] == "msg error" and "401" in b[1][2] and "API key" in b[1][2], f"{b[1]}")

    # settings: the key, greedy sampling, a short answer, a system prompt
    d.find_element("id", "clear").click()
    d.find_element("css selector", "#settings summary").click()  # opens the settings
    for field, value in (("api-key", KEY), ("temperature", "0"), ("max-tokens", "24"), ("system", "Be brief.")):
        el = d.find_element("id", field)
        el.clear()
        el.send_keys(value)
    send(d, "hello there")
    wait_for(lambda: len(boxes(d)) == 2 and idle(d), 60, "the first answer")
    want1, note1 = openai_answer(srv, [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello there"}], 24)
    b = boxes(d)
    check("a message sent from the page gets the answer OpenAI's client gets (greedy)",
          b[1][0] == "msg assistant" and b[1][1] == want1 and want1 != "" and b[1][3] == 0, f"page={b[1]} api={want1!r}")
    check("the answer's note gives its usage and end", b[1][2] == note1, f"page={b[1][2]!r} api={note1!r}")

    send(d, "and then?")
    wait_for(lambda: len(boxes(d)) == 4 and idle(d), 60, "the second answer")
    want2, _ = openai_answer(srv, [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello there"},
                                {"role": "assistant", "content": want1},
                                {"role": "user", "content": "and then?"}], 24)
    b = boxes(d)
    check("the second turn sends the conversation so far", b[3][1] == want2, f"page={b[3]} api={want2!r}")
    m = srv.metrics({"Authorization": "Bearer " + KEY})
    check("the second turn reused the first's cache in the server", m["prompt_tokens_cached_total"] > 0, f"{m}")

    d.refresh()
    wait_for(lambda: len(boxes(d)) == 4, 20, "the conversation after a reload")
    texts = [x[1] for x in boxes(d)]
    stored = d.execute_script("return [localStorage.getItem('trimlm.chat.v1'), sessionStorage.getItem('trimlm.chat.apikey'),"
                              " document.getElementById('api-key').value, document.getElementById('system').value]")
    check("a reload keeps the conversation and the settings",
          texts == ["hello there", want1, "and then?", want2] and stored[3] == "Be brief.", f"{texts} {stored}")
    check("the API key is kept for the tab only (sessionStorage), never in localStorage",
          stored[1] == KEY and stored[2] == KEY and KEY not in stored[0], f"{stored}")


def test_stop(srv, d):
    auth = {"Authorization": "Bearer " + KEY}
    d.find_element("id", "clear").click()
    if not d.find_element("id", "settings").get_attribute("open"):
        d.find_element("css selector", "#settings summary").click()
    el = d.find_element("id", "max-tokens")
    el.clear()
    el.send_keys("15000")
    # a prompt whose greedy answer does not end by itself within 2000 tokens
    # (a random model ends its answers at random), found with the API
    prompt = None
    for i in range(40):
        r = srv.client(key=KEY).chat.completions.create(
            model="m", temperature=0, max_tokens=2000,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"go on {i}"}])
        if r.choices[0].finish_reason == "length":
            prompt = f"go on {i}"
            break
    if prompt is None:
        fail("no prompt among 40 gets an answer of 2000 tokens from the synthetic model")
    cancelled0 = srv.metrics(auth)["jobs_cancelled_total"]
    send(d, prompt)
    lengths = []

    def grown():
        b = boxes(d)
        if len(b) == 2 and b[1][1] and (not lengths or len(b[1][1]) != lengths[-1]):
            lengths.append(len(b[1][1]))
        return len(lengths) >= 3 or idle(d)

    wait_for(grown, 60, "the answer to grow")
    check("the answer appears in pieces while it streams", len(lengths) >= 3 and not idle(d),
          f"lengths={lengths} idle={idle(d)}")
    d.find_element("id", "stop").click()
    wait_for(lambda: idle(d), 10, "the page to stop")
    stopped = boxes(d)[1]
    busy = srv.wait_metric("slots_busy", lambda v: v == 0, timeout=10, headers=auth)
    m = srv.metrics(auth)
    time.sleep(0.5)
    check("stop ends the answer in the page, keeping what came", stopped[2] == "stopped" and
          len(stopped[1]) >= lengths[-1] and boxes(d)[1] == stopped, f"{stopped}")
    check("stop frees the server's slot at once", busy == 0 and m["jobs_cancelled_total"] == cancelled0 + 1 and
          m["generated_tokens_total"] < 15000, f"{m}")
    d.save_screenshot(os.path.join(OUT, "chat.png"))
    errors = [e for e in d.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    check("the browser reported no CSP violation", not errors, f"{errors}")


def main():
    # a model slow enough (at long contexts) that a 15000-token answer
    # takes seconds, so that stop lands mid-stream
    model = os.path.join(OUT, "slow.gguf")
    synth_gguf.write_gguf(model, n_embd=256, n_head=4, n_head_kv=2, n_ff=768, n_layer=4, ctx=16384, seed=2)
    srv = Server(model, "-t", "1", "-np", "2", "-c", "16384", "--api-key", KEY)
    d = None
    try:
        test_headers(srv)
        d = browser()
        test_page(srv, d)
        test_stop(srv, d)
    finally:
        if d:
            d.quit()
        srv.stop()


if __name__ == "__main__":
    main()
    sys.exit(summary())
