"""A fake NDIF server for the transport tests: speaks just enough of NDIF's protocol for nnsight's real client.

Why: the live NDIF cannot be reached from these machines, and each fault (rejected key, model not
hosted, a job failing or timing out on the server, a result too big, a job left in the queue) must be
received by nnsight 0.8.1's own client, not by a mock of it. What nnsight's blocking RemoteBackend does
(nnsight/intervention/backends/remote.py), and what this server answers:

1. websocket GET /subscribe (header ndif-api-key) -> first text frame {"session_id": ...};
2. POST /request, multipart: field "data" = RequestModel JSON (model_key, session_id, compress),
   file "blob" = the serialized trace -> ResponseModel JSON (status RECEIVED), or HTTP 401 {"detail": ...};
3. text frames on the websocket, each a ResponseModel JSON: QUEUED, RUNNING, then COMPLETED whose
   `data` is the URL of the result, or ERROR whose `description` says why;
4. GET /result/<id> -> the result: torch.save of {name: value}, zstd-compressed when the request was.
Also GET /status (NDIF's deployments, as nnsight.status() reads them) and GET /ping.

It listens on 127.0.0.1 only, answers at most `max_requests` HTTP requests (more get 503), and
stops by itself after `lifetime` seconds (a timer thread), or when the `with` block ends.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import queue
import re
import select
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NOT_HOSTED = ("Model is not dedicated and hotswapping is not supported for this API key. "
              "See https://nnsight.net/status/ for a list of scheduled models.")
SERVER_TRACEBACK = ("Traceback (most recent call last):\n  File \"<nnsight>\", line 3, in <block>\n"
                    "IndexError: index 126 is out of bounds for dimension 0 with size 126")
TIME_LIMIT = "Job exceeded its time limit of 60 seconds and was stopped."


def _frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked websocket frame (server to client), RFC 6455."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 2**16:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


def result_blob(values: dict, compress: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(values, buffer, pickle_protocol=4)
    data = buffer.getvalue()
    if compress:
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    return data


class FakeNDIF:
    """`with FakeNDIF(["fail", "complete"]) as server: ... remote=server.url ...`

    `jobs`: what happens to each POSTed job, in order (the last one repeats):
    "complete" (QUEUED, RUNNING, COMPLETED with a URL), "fail" (ERROR with a server traceback),
    "time-limit" (ERROR: past the server's time limit), "queued" (QUEUED, then nothing), "big"
    (COMPLETED with `big_bytes` of random floats), "bomb" (`big_bytes` of zeros: small once compressed). A model not in `hosted` gets NDIF's
    not-hosted ERROR; a key not in `keys` gets HTTP 401 (whose detail echoes the key, as a careless
    server might: the client must not repeat it).
    """

    def __init__(self, jobs=("complete",), *, result: dict | None = None, hosted=("meta-llama/Llama-3.1-405B",),
                 keys=("good-key",), max_requests: int = 20, lifetime: float = 60.0, big_bytes: int = 3 * 2**20):
        self.jobs = list(jobs)
        self.result = result or {}
        self.hosted = set(hosted)
        self.keys = set(keys)
        self.max_requests = max_requests
        self.lifetime = lifetime
        self.big_bytes = big_bytes
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request answered
        self.model_keys: list[str] = []
        self.queued = threading.Event()  # set when a job has been told QUEUED
        self.closed_while_queued = threading.Event()  # set when a client hung up on a job still queued
        self._sessions: dict[str, queue.Queue] = {}
        self._results: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._server = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeNDIF:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._timer.cancel()
            self._server.shutdown()
            self._server.server_close()
            for session in list(self._sessions.values()):
                session.put(None)

    def _admit(self, method: str, path: str) -> bool:
        with self._lock:
            self._count += 1
            self.seen.append((method, path))
            return self._count <= self.max_requests

    # ------------------------------------------------------------ jobs

    def _next_job(self) -> str:
        with self._lock:
            return self.jobs.pop(0) if len(self.jobs) > 1 else self.jobs[0]

    def _run_job(self, job_id: str, session: queue.Queue, kind: str, repo_id: str, compress: bool) -> None:
        def send(status: str, description: str = "", data=None) -> None:
            session.put(json.dumps({"id": job_id, "status": status, "description": description, "data": data}))
            time.sleep(0.02)

        send("QUEUED", "Moved to position 1 in Queue.")
        self.queued.set()
        if repo_id not in self.hosted:
            send("ERROR", NOT_HOSTED)
            return
        if kind == "queued":
            return  # stays queued: the client has to give up (or be stopped)
        send("RUNNING", "Your job has started running.")
        if kind == "fail":
            send("ERROR", SERVER_TRACEBACK)
        elif kind == "time-limit":
            send("ERROR", TIME_LIMIT)
        else:
            big = {"big": torch.rand, "bomb": torch.zeros}.get(kind)
            values = {"blob": big(self.big_bytes // 4)} if big else self.result
            self._results[job_id] = result_blob(values, compress)
            send("COMPLETED", "Your job has been completed.", f"{self.url}/result/{job_id}")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer (a refused download) is expected: say nothing."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeNDIF
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        fake = self.server_fake
        if not fake._admit("GET", self.path):
            return self._json(503, {"detail": "fake NDIF: request budget spent"})
        if self.path.startswith("/subscribe"):
            return self._websocket()
        if self.path == "/ping":
            return self._json(200, "pong")
        if self.path == "/status":
            deployments = {f"{repo}-0": {"repo_id": repo, "model_key": f"x:{repo}", "deployment_level": "HOT",
                                         "application_state": "RUNNING"} for repo in fake.hosted}
            return self._json(200, {"deployments": deployments})
        match = re.fullmatch(r"/result/([\w-]+)", self.path)
        if match and match.group(1) in fake._results:
            data = fake._results.pop(match.group(1))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        fake = self.server_fake
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not fake._admit("POST", self.path):
            return self._json(503, {"detail": "fake NDIF: request budget spent"})
        if self.path != "/request":
            return self._json(404, {"detail": "Not Found"})
        key = self.headers.get("ndif-api-key", "")
        if key not in fake.keys:
            return self._json(401, {"detail": f"Missing or invalid API key {key!r}. Please visit "
                                              "https://login.ndif.us/ to create a new one."})
        metadata = json.loads(_form_field(body, self.headers.get("Content-Type", ""), "data"))
        fake.model_keys.append(metadata["model_key"])
        repo_id = json.loads(metadata["model_key"].split(":", 1)[1]).get("repo_id")
        job_id = str(uuid.uuid4())
        session = fake._sessions.get(metadata.get("session_id", ""))
        self._json(200, {"id": job_id, "status": "RECEIVED",
                         "description": "Your job has been received and is waiting to be queued."})
        if session is not None:
            kind = fake._next_job() if repo_id in fake.hosted else "not-hosted"  # a refused model uses no job
            threading.Thread(target=fake._run_job, daemon=True,
                             args=(job_id, session, kind, repo_id, bool(metadata.get("compress")))).start()

    def _websocket(self) -> None:
        fake = self.server_fake
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        sock: socket.socket = self.connection
        session_id = str(uuid.uuid4())
        outbox: queue.Queue = queue.Queue()
        fake._sessions[session_id] = outbox
        sock.sendall(_frame(json.dumps({"session_id": session_id}).encode(), 1))
        last = None
        try:
            while True:
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable and not sock.recv(4096):  # the client closed (or sent its close frame: we stop too)
                    break
                if readable:
                    break
                try:
                    message = outbox.get_nowait()
                except queue.Empty:
                    continue
                if message is None:
                    break
                last = json.loads(message)["status"]
                sock.sendall(_frame(message.encode(), 1))
        except OSError:
            pass
        finally:
            if last == "QUEUED":
                fake.closed_while_queued.set()
            fake._sessions.pop(session_id, None)
            self.close_connection = True


def _form_field(body: bytes, content_type: str, name: str) -> str:
    """The value of one plain field of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, value = part.partition(b"\r\n\r\n")
        if f'name="{name}"'.encode() in head and b"filename=" not in head:
            return value.rsplit(b"\r\n", 1)[0].decode()
    raise ValueError(f"no form field {name!r}")
