"""The scale-out recipe, tools/serve-nginx.conf: nginx (run as in the recipe,
with its own prefix directory, on free loopback ports) in front of two
`trimlm serve` processes on a synthetic model.

  - requests through nginx reach both servers (each serves the model under its
    own file name, so an answer tells which one gave it) and get the answer a
    server gives directly (greedy); the chat page passes with its headers
  - streamed answers pass event by event (reads of a few hundred bytes, not
    the whole answer at its end)
  - one server killed (SIGKILL) while a client keeps sending: every request
    sent after the kill is answered, by the other server
  - a client that leaves mid-stream frees its slot behind nginx
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import synth_gguf
from test_serve import Server
from testutil import check, fail, fresh_dir, scratch_dir, summary

OUT = scratch_dir("serve_nginx")
RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "serve-nginx.conf")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe_for(port, upstreams):
    """The recipe with its ports replaced, in the foreground (for the test to
    end it); fails when the recipe no longer has the lines replaced."""
    with open(RECIPE) as f:
        conf = f.read()
    subs = [(r"daemon on;", "daemon off;"), (r"listen 127\.0\.0\.1:8080;", f"listen 127.0.0.1:{port};"),
            (r"server 127\.0\.0\.1:8081 ", f"server 127.0.0.1:{upstreams[0]} "),
            (r"server 127\.0\.0\.1:8082 ", f"server 127.0.0.1:{upstreams[1]} ")]
    for pattern, new in subs:
        conf, n = re.subn(pattern, new, conf)
        if n != 1:
            fail(f"{RECIPE}: expected one line matching {pattern!r}, found {n}")
    return conf


class Nginx:
    def __init__(self, upstreams):
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(exe, os.X_OK):
            fail("nginx is missing (tools/install-deps.sh installs nginx-light)")
        self.prefix = fresh_dir(os.path.join(OUT, "nginx"))
        os.chmod(self.prefix, 0o755)  # nginx's workers run as nobody when started as root
        self.port = free_port()
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(recipe_for(self.port, upstreams))
        self.proc = subprocess.Popen([exe, "-p", self.prefix, "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > end:
                    fail(f"nginx did not start: {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
                         f" {self.error_log()}")
                time.sleep(0.05)

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def request(port, method, path, body=None, timeout=60):
    """(status, headers, body bytes), on a new connection."""

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=json.dumps(body).encode() if body is not None else None,
              headers={"Content-Type": "application/json"} if body is not None else {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def ask(port, text, max_tokens=8):
    """(status, model, content) of a greedy chat answer."""
    status, _, data = request(port, "POST", "/v1/chat/completions",
                           {"messages": [{"role": "user", "content": text}], "temperature": 0,
                            "max_tokens": max_tokens})
    if status != 200:
        return status, None, data
    obj = json.loads(data)
    return status, obj["model"], obj["choices"][0]["message"]["content"]


def open_stream(port, max_tokens):
    """A socket with a streamed chat request sent on it (ignore_eos: the
    answer runs to max_tokens)."""
    body = json.dumps({"messages": [{"role": "user", "content": "go"}], "stream": True,
                       "ignore_eos": True, "max_tokens": max_tokens}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def test_balance(ngx, servers):
    status, hdr, _ = request(ngx.port, "GET", "/health")
    check("/health answers through nginx", status == 200, f"{status}")
    status, hdr, page = request(ngx.port, "GET", "/")
    check("the chat page passes through nginx with its CSP",
          status == 200 and page.startswith(b"<!DOCTYPE html>") and
          hdr.get("content-security-policy", "").startswith("default-src 'none'"), f"{status} {hdr}")
    direct = ask(servers[0].port, "hello")[2]
    answers = [ask(ngx.port, "hello") for _ in range(8)]
    models = {m for _, m, _ in answers}
    check("requests through nginx reach both servers", models == {"a.gguf", "b.gguf"}, f"{answers}")
    check("and get the answer a server gives directly",
          all(s == 200 and c == direct for s, _, c in answers), f"{answers} direct={direct!r}")


def test_stream_unbuffered(ngx):
    s = open_stream(ngx.port, 400)
    sizes, data = [], b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        sizes.append(len(b))
        data += b
    s.close()
    events = data.count(b"\ndata: {") + data.count(b"\r\ndata: {")
    sizes.sort()
    median = sizes[len(sizes) // 2] if sizes else 0
    check("a streamed answer passes through nginx event by event",
          b"data: [DONE]" in data and events >= 400 and len(sizes) >= 100 and median < 2048,
          f"{len(sizes)} reads, median {median} bytes, {events} events")


def test_failover(ngx, servers):
    results, stop = [], threading.Event()
    killed_at = []

    def client():
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = ask(ngx.port, "hello")
            except OSError as e:
                r = (None, None, str(e))
            results.append((t0, r))
            i += 1

    t = threading.Thread(target=client)
    t.start()
    while len(results) < 10:
        time.sleep(0.01)
    servers[0].proc.send_signal(signal.SIGKILL)
    servers[0].proc.wait()
    killed_at.append(time.monotonic())
    n_before = len(results)
    while len(results) < n_before + 30:
        time.sleep(0.01)
    stop.set()
    t.join()
    after = [r for t0, r in results if t0 > killed_at[0]]
    direct = ask(servers[1].port, "hello")[2]
    check("after one server is killed, every later request is answered, by the other",
          len(after) >= 30 and all(r == (200, "b.gguf", direct) for r in after),
          f"{[r for r in after if r != (200, 'b.gguf', direct)][:3]} of {len(after)}")
    check("the requests before the kill were answered too",
          all(r[0] == 200 for t0, r in results if t0 < killed_at[0] - 1.0), f"{results[:3]}")


def test_client_leaves(ngx, srv):
    cancelled0 = srv.metrics()["jobs_cancelled_total"]
    s = open_stream(ngx.port, 12000)
    got = b""
    while got.count(b"data: {") < 5:
        got += s.recv(4096)
    s.close()
    busy = srv.wait_metric("slots_busy", lambda v: v == 0, timeout=10)
    m = srv.metrics()
    check("a client that leaves mid-stream frees its slot behind nginx",
          busy == 0 and m["jobs_cancelled_total"] == cancelled0 + 1 and m["generated_tokens_total"] < 12000, f"{m}")


def main():
    # two copies of one model under two names: an answer's "model" tells
    # which server gave it
    a, b = os.path.join(OUT, "a.gguf"), os.path.join(OUT, "b.gguf")
    synth_gguf.write_gguf(a, n_embd=256, n_head=4, n_head_kv=2, n_ff=768, n_layer=4, ctx=16384, seed=2)
    shutil.copyfile(a, b)
    servers = [Server(a, "-t", "1", "-np", "2", "-c", "16384"), Server(b, "-t", "1", "-np", "2", "-c", "16384")]
    ngx = None
    try:
        ngx = Nginx([servers[0].port, servers[1].port])
        test_balance(ngx, servers)
        test_stream_unbuffered(ngx)
        test_failover(ngx, servers)
        test_client_leaves(ngx, servers[1])
    finally:
        if ngx:
            ngx.stop()
        for s in servers:
            if s.proc.poll() is None:
                s.stop()


if __name__ == "__main__":
    main()
    sys.exit(summary())
