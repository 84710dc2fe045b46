"""A tiny, real HTTP server speaking the OpenAI chat-completions protocol.

For tests only: point ``ChatOpenAI`` / ``init_chat_model("openai:...")`` at it
and script what the "LLM" answers, without any network or API key.

    from support.openai_server import Reply, ScriptedChatServer
    # (tests/ has no __init__.py, so pytest puts tests/ on sys.path; the
    #  "tests.support..." spelling only works under `python -m pytest`.)

    with ScriptedChatServer() as srv:
        srv.script(Reply.text("Paris."), Reply.error(500, "boom"))
        srv.default(Reply.text("fallback"))        # used once the queue is empty
        llm = ChatOpenAI(model="scripted-model", base_url=srv.base_url,
                         api_key="x", timeout=2, max_retries=0)
        assert llm.invoke("Capital of France?").content == "Paris."
        assert srv.requests[0]["messages"][-1]["content"] == "Capital of France?"

Each POST /v1/chat/completions consumes the next scripted reply:
  Reply.text(s)               200 with a normal assistant message (or SSE stream)
  Reply.error(status, msg)    HTTP error with an OpenAI-style JSON error body
  Reply.hang(seconds)         sleep first (interrupted when the server stops)
  Reply.malformed(body=...)   200 with a body that is not valid JSON
  Reply.from_fn(fn)           content = fn(parsed_request_json)
A plain string passed to script()/default() means Reply.text(string).
"stream": true is answered with OpenAI-format "chat.completion.chunk" events,
plus a usage chunk when stream_options.include_usage is set.
GET /v1/models lists the models seen so far (or "scripted-model").
"""

import itertools
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}


class Reply:
    """One scripted answer. Build with the class methods below."""

    def __init__(self, kind, content="", delay=0.0, fn=None, body="", status=200, error=None):
        self.kind, self.content, self.delay, self.fn = kind, content, delay, fn
        self.body, self.status, self.error = body, status, error  # error: JSON error body

    @classmethod
    def text(cls, content):
        return cls("text", content=content)

    @classmethod
    def error(cls, status, message, type=None, code=None):
        err_type = type or _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
        return cls("error", status=status, error=_error_body(message, err_type, code))

    @classmethod
    def hang(cls, seconds, then="(late reply)"):
        return cls("text", content=then, delay=seconds)

    @classmethod
    def malformed(cls, body="this is {not json"):
        return cls("malformed", body=body)

    @classmethod
    def from_fn(cls, fn):
        return cls("fn", fn=fn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: streams end at close
    server_version = "ScriptedChatServer/1.0"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path.rstrip("/") not in ("/v1/models", "/models"):
            return self._send_json(404, _error_body("not found", "not_found_error"))
        names = self.server.owner.models_seen() or ["scripted-model"]
        self._send_json(200, {"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names]})

    def do_POST(self):
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._send_json(404, _error_body("not found", "not_found_error"))
            try:
                req = json.loads(raw or b"{}")
            except ValueError:
                return self._send_json(400, _error_body("request body is not JSON", "invalid_request_error"))
            srv = self.server.owner
            reply = srv._take(req)
            if reply is None:
                return self._send_json(500, _error_body("ScriptedChatServer: no scripted reply left", "server_error"))
            if reply.delay and srv._stop.wait(reply.delay):
                return  # server is stopping: drop the connection
            self._answer(req, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # client gave up (e.g. its timeout fired)

    def _answer(self, req, reply):
        if reply.kind == "error":
            return self._send_json(reply.status, reply.error)
        if reply.kind == "malformed":
            return self._send(200, "application/json", reply.body.encode())
        content = reply.content
        if reply.kind == "fn":
            try:
                content = str(reply.fn(req))
            except Exception as exc:  # surface test-helper bugs to the client
                return self._send_json(500, _error_body(f"from_fn raised {exc!r}", "server_error"))
        model = req.get("model") or "scripted-model"
        usage = _usage(req, content)
        if req.get("stream"):
            return self._stream(req, model, content, usage)
        self._send_json(200, {
            "id": _new_id(), "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": usage})

    def _stream(self, req, model, content, usage):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        cid, created = _new_id(), int(time.time())

        def chunk(delta, finish=None, choices=True):
            body = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": None,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}] if choices else []}
            if not choices:
                body["usage"] = usage
            self._event(json.dumps(body))

        chunk({"role": "assistant", "content": ""})
        for piece in (p for p in re.findall(r"\S*\s*", content) if p):
            chunk({"content": piece})
        chunk({}, finish="stop")
        if (req.get("stream_options") or {}).get("include_usage"):
            chunk(None, choices=False)
        self._event("[DONE]")

    def _event(self, data):
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def _send_json(self, status, obj):
        self._send(status, "application/json", json.dumps(obj).encode())

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _error_body(message, err_type, code=None):
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


_ids = itertools.count(1)


def _new_id():
    return f"chatcmpl-scripted-{next(_ids)}"


def _usage(req, content):
    prompt = sum(len(str(m.get("content") or "").split()) for m in req.get("messages") or [])
    completion = len(content.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never wait for handler threads at close

    def handle_error(self, request, client_address):  # no tracebacks for hang-ups
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ScriptedChatServer:
    """Context manager running the fake OpenAI endpoint on 127.0.0.1:<free port>."""

    def __init__(self):
        self.requests = []  # parsed JSON bodies of every chat-completions POST
        self._queue, self._default = [], None
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._httpd = self._thread = None
        self.base_url = None

    def script(self, *replies):
        with self._lock:
            self._queue.extend(Reply.text(r) if isinstance(r, str) else r for r in replies)
        return self

    def default(self, reply):
        with self._lock:
            self._default = Reply.text(reply) if isinstance(reply, str) else reply
        return self

    def models_seen(self):
        with self._lock:
            return sorted({r["model"] for r in self.requests if r.get("model")})

    def _take(self, req):
        """Record a request and return the reply it gets (None: nothing scripted)."""
        with self._lock:
            self.requests.append(req)
            return self._queue.pop(0) if self._queue else self._default

    def __enter__(self):
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                         kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()  # wakes any Reply.hang sleepers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        return False
