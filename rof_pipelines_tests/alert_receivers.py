"""Local receivers for alert tests: a real HTTP server and a real SMTP server on 127.0.0.1.

``HttpReceiver`` stands in for a webhook, Slack or Telegram (paths containing ``/sendMessage`` get
Telegram-shaped JSON). Its ``mode`` can change while a test runs:

- ``"ok"``: 200 (body ``ok``, or ``{"ok": true, "result": {"message_id": N}}`` for Telegram);
- ``"error"``: 500; ``"throttle"``: 429 with ``Retry-After: <retry_after>``; ``"reject"``: 400;
- ``"hang"``: the request is held until the mode changes, :meth:`HttpReceiver.release` or
  :meth:`HttpReceiver.stop`, then answered 504; it counts as ``abandoned``, never ``delivered``.

Error bodies quote the request's path, as some real servers do, so tests can check that a token in
the path never comes back out of a channel. ``stop()`` closes the port (connection refused) and
``start()`` reopens the same port: "the receiver is gone, then back".

``SmtpReceiver`` is an aiosmtpd server keeping every accepted message (``messages``) and envelope
(``envelopes``); it can refuse recipients (``refuse``), replace its reply to DATA (``data_reply``),
require a login (``users``) and offer STARTTLS (``tls_context``).

Usage::

    with HttpReceiver() as hook, SmtpReceiver() as smtp:
        ...  # hook.url, smtp.port
        assert hook.delivered[0].json["rule"] == "run_failed"
"""

import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

HANG_LIMIT_S = 60.0  # a held request is answered after this long even if nobody releases it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RecordedRequest:
    """One request as the receiver saw it; ``status`` is what it answered (None while held)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: datetime
    json: Any = None  # the body parsed as JSON, None when it is not JSON
    status: int | None = None

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        lowered = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == lowered), None)


class HttpReceiver:
    """A threaded HTTP server recording every request; see the module docstring for the modes."""

    MODES = ("ok", "error", "throttle", "reject", "hang")

    def __init__(self, mode: str = "ok", *, retry_after: int = 7, port: int = 0) -> None:
        self._cond = threading.Condition()
        self._mode = self._checked(mode)
        self._wakeups = 0
        self.retry_after = retry_after
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.abandoned: list[RecordedRequest] = []
        self._message_ids = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control ---

    @classmethod
    def _checked(cls, mode: str) -> str:
        if mode not in cls.MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(cls.MODES)}")
        return mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        """Changing the mode also lets go of held requests."""
        with self._cond:
            self._mode = self._checked(mode)
            self._wakeups += 1
            self._cond.notify_all()

    def release(self) -> None:
        """Let go of every held request (answered 504; they stay ``abandoned``)."""
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def delivered(self) -> list[RecordedRequest]:
        """The requests answered 2xx."""
        with self._cond:
            return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]

    def start(self) -> Self:
        """Listen (again) on ``port``; the first start picks a free port when it is 0."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"http-receiver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: new connections are refused until :meth:`start`."""
        server, self._server = self._server, None
        if server is None:
            return
        self.release()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- serving ---

    def _hold(self, request: RecordedRequest) -> None:
        with self._cond:
            self.abandoned.append(request)
            seen = self._wakeups
            self._cond.wait_for(lambda: self._wakeups != seen or self._server is None, timeout=HANG_LIMIT_S)

    def _answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        telegram = "/sendMessage" in request.path
        mode = self.mode
        if mode == "hang":
            self._hold(request)
            return 504, {"Content-Type": "text/plain"}, b"abandoned"
        if telegram:
            return self._telegram(mode, request)
        if mode == "ok":
            return 200, {"Content-Type": "text/plain"}, b"ok"
        if mode == "throttle":
            headers = {"Content-Type": "text/plain", "Retry-After": str(self.retry_after)}
            return 429, headers, b"rate limited"
        status, text = (500, "internal error") if mode == "error" else (400, "invalid_payload")
        return status, {"Content-Type": "text/plain"}, f"{text} at {request.path}".encode()

    def _telegram(self, mode: str, request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"}
        body = request.json if isinstance(request.json, dict) else {}
        if mode == "ok":
            with self._cond:
                self._message_ids += 1
                message_id = self._message_ids
            result = {"message_id": message_id, "chat": {"id": body.get("chat_id")}, "text": body.get("text")}
            return 200, headers, json.dumps({"ok": True, "result": result}).encode()
        if mode == "throttle":
            reply = {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {self.retry_after}",
                "parameters": {"retry_after": self.retry_after},
            }
            return 429, {**headers, "Retry-After": str(self.retry_after)}, json.dumps(reply).encode()
        status, text = (
            (500, "Internal Server Error") if mode == "error" else (400, "Bad Request: chat not found")
        )
        reply = {"ok": False, "error_code": status, "description": f"{text} ({request.path})"}
        return status, headers, json.dumps(reply).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: stop() leaves nothing open

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                request = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers=dict(self.headers.items()),
                    body=body,
                    at=datetime.now(UTC),
                    json=parsed,
                )
                with receiver._cond:
                    receiver.requests.append(request)
                status, headers, payload = receiver._answer(request)
                with receiver._cond:
                    request.status = status
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (a timeout) before the answer
                    pass

            do_POST = do_GET = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read .requests instead

        return Handler


# --- SMTP ---------------------------------------------------------------------------------------------


@dataclass
class _SmtpHandler:
    receiver: "SmtpReceiver"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.receiver.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        receiver = self.receiver
        if receiver.data_reply is not None:
            return receiver.data_reply
        raw = envelope.original_content or envelope.content
        with receiver._lock:
            receiver.messages.append(message_from_bytes(raw, policy=default_policy))
            receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            number = len(receiver.messages)
        return f"250 2.0.0 Ok: queued as Q{number:05d}"


@dataclass
class SmtpReceiver:
    """An aiosmtpd server on 127.0.0.1 keeping what it accepts.

    ``users`` (login -> password) makes a login required; ``tls_context`` offers STARTTLS
    (``require_starttls`` insists on it), ``implicit_tls`` makes it SMTPS. ``refuse`` holds recipients answered ``550``;
    ``data_reply`` (e.g. ``"451 4.3.0 try again later"``) replaces the reply to DATA and keeps nothing.
    """

    users: dict[str, str] | None = None
    tls_context: ssl.SSLContext | None = None
    require_starttls: bool = False
    implicit_tls: ssl.SSLContext | None = None  # SMTPS: TLS from the first byte
    port: int = 0
    refuse: set[str] = field(default_factory=set)
    data_reply: str | None = None
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._controller: Any = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            isinstance(auth_data, LoginPassword)
            and self.users is not None
            and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> "SmtpReceiver":
        """Listen (again) on ``port``; the first start picks a free port when it is 0."""
        from aiosmtpd.controller import Controller

        if self._controller is not None:
            return self
        self.port = self.port or free_port()
        kwargs: dict[str, Any] = {}
        if self.users is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=False)
        if self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=self.require_starttls)
        if self.implicit_tls is not None:
            kwargs["ssl_context"] = self.implicit_tls
        self._controller = Controller(_SmtpHandler(self), hostname=self.host, port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> "SmtpReceiver":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
