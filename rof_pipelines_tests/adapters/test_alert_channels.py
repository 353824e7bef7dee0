"""The notification channels against real local receivers (an HTTP server, aiosmtpd), and their
formats as pure functions."""

import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from rof_pipelines.adapters.alerts import channels as ch
from rof_pipelines.adapters.alerts.channels import build_channel, test_notice
from rof_pipelines.alerting_settings import (
    EmailChannel,
    LogChannel,
    SlackChannel,
    TelegramChannel,
    WebhookChannel,
)
from rof_pipelines.core.alerts.model import Notice, delivery_id, fingerprint, notice_id
from rof_pipelines.errors import AlertDeliveryError, AlertRefused, CircuitOpenError, ConfigError
from rof_pipelines.settings import CircuitBreakerConfig
from rof_pipelines_tests.alert_receivers import HttpReceiver, SmtpReceiver, free_port

# aiosmtpd warns when a login is offered without TLS: the plain-text tests do that on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
TOKEN = "123456:AAHsecretTOKENvalue"
HOOK_SECRET = "T00/B00/XyZsecretPathPart"
HEADER_SECRET = "Bearer hdr-secret-value-42"
PASSWORD = "p@ss:w/rd-secret"
BREAKER = CircuitBreakerConfig(fail_max=2, reset_timeout="30s")


def make_notice(event: str = "firing", severity: str = "critical", **values: Any) -> Notice:
    labels = {"job": "ingest", "market": "XNYS"}
    fp = fingerprint("run_failed", labels)
    return Notice(
        notice_id=notice_id(fp, event, AT),
        event=event,  # type: ignore[arg-type]
        rule="run_failed",
        fingerprint=fp,
        labels=labels,
        severity=severity,  # type: ignore[arg-type]
        summary="ingest failed for XNYS <see run 42> & more",
        at=AT,
        values=values or {"failures": 3, "ratio": 0.5},
    )


NOTICE = make_notice()
DID = delivery_id(NOTICE.notice_id, "hook")


def webhook(url: str, **extra: Any) -> WebhookChannel:
    return WebhookChannel.model_validate({"type": "webhook", "url": url, **extra})


def secrets_absent(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into {text!r}"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


# --- formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "severity", "level"),
    [
        ("firing", "critical", logging.ERROR),
        ("firing", "warning", logging.WARNING),
        ("firing", "info", logging.INFO),
        ("resolved", "critical", logging.INFO),
    ],
)
def test_log_line_level_by_severity(event: str, severity: str, level: int) -> None:
    got_level, line = ch.log_line(make_notice(event, severity))
    assert got_level == level
    assert line == (
        f"ALERT {event.upper()} {severity} run_failed job=ingest market=XNYS: ingest failed for XNYS <see run 42> & more"
    )


def test_webhook_payload_is_strict_json() -> None:
    notice = make_notice(bad=float("nan"), when=AT, n=1)
    body = ch.webhook_payload(notice, "d1")
    assert body == {
        "id": notice.notice_id,
        "delivery_id": "d1",
        "event": "firing",
        "rule": "run_failed",
        "severity": "critical",
        "labels": {"job": "ingest", "market": "XNYS"},
        "summary": notice.summary,
        "values": {"bad": None, "when": AT.isoformat(), "n": 1},
        "at": "2024-05-06T07:08:09+00:00",
        "fingerprint": notice.fingerprint,
    }


def test_slack_payload_escapes_markup() -> None:
    body = ch.slack_payload(NOTICE)
    assert body["text"].startswith(":red_circle: [FIRING] critical run_failed: ingest failed")
    assert "&lt;see run 42&gt; &amp; more" in body["text"]
    (section,) = body["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    assert "`job=ingest` `market=XNYS`" in text
    assert "<see" not in text
    assert ch.slack_payload(make_notice("resolved"))["text"].startswith(":white_check_mark: [RESOLVED]")


def test_telegram_payload_and_email_message() -> None:
    body = ch.telegram_payload(NOTICE, "-100")
    assert body["chat_id"] == "-100" and body["disable_web_page_preview"] is True
    assert body["text"].startswith("[FIRING] critical run_failed\ningest failed")
    assert "Labels: job=ingest market=XNYS" in body["text"]

    message = ch.email_message(NOTICE, "abc", "rof@example.org", ["a@example.org", "b@example.org"])
    assert message["Subject"] == "[rof FIRING critical] run_failed job=ingest market=XNYS"
    assert message["Message-ID"] == "<abc@rof-pipelines>"
    assert message["To"] == "a@example.org, b@example.org"
    assert message["Date"] == format_datetime(AT)
    assert "Values: failures=3, ratio=0.5" in message.get_content()


def test_test_notice_is_unique_and_informational() -> None:
    first, second = test_notice(AT), test_notice(AT)
    assert first.notice_id != second.notice_id
    assert (first.event, first.rule, first.severity, first.at) == ("test", "channel_test", "info", AT)


def test_retry_after_reads_seconds_and_dates() -> None:
    assert ch._retry_after("12") == 12.0
    assert ch._retry_after(None) is None and ch._retry_after("soon") is None
    later = format_datetime(AT + timedelta(seconds=90), usegmt=True)
    assert ch._retry_after(later, now=AT) == pytest.approx(90)


def test_build_channel_kinds_and_unknown() -> None:
    assert build_channel("log", LogChannel()).kind == "log"
    assert build_channel("w", webhook("http://127.0.0.1:1/x")).kind == "webhook"
    assert build_channel("s", SlackChannel(type="slack", url="http://127.0.0.1:1/x")).kind == "slack"
    tg = TelegramChannel(type="telegram", token="t", chat_id="1")
    assert build_channel("t", tg).kind == "telegram"
    mail = EmailChannel(type="email", host="h", sender="a@b.c", recipients=["d@e.f"])
    assert build_channel("m", mail).kind == "email"
    with pytest.raises(ConfigError, match=r"alerting\.channels\.x"):
        build_channel("x", object())


# --- log ----------------------------------------------------------------------------------------------


def test_log_channel_writes_the_alerts_logger(caplog: pytest.LogCaptureFixture) -> None:
    channel = build_channel("log", LogChannel())
    with caplog.at_level(logging.INFO, logger=ch.LOGGER_NAME):
        assert channel.send(NOTICE, DID) == "logged"
        assert channel.send(make_notice("resolved"), DID) == "logged"
    records = [r for r in caplog.records if r.name == "rof_pipelines.alerts"]
    assert [(r.levelno, r.getMessage()[:20]) for r in records] == [
        (logging.ERROR, "ALERT FIRING critica"),
        (logging.INFO, "ALERT RESOLVED criti"),
    ]


# --- webhook ------------------------------------------------------------------------------------------


def test_webhook_posts_the_notice_with_idempotency_key(receiver: HttpReceiver) -> None:
    channel = build_channel(
        "hook", webhook(f"{receiver.url}/hook/{HOOK_SECRET}", headers={"Authorization": HEADER_SECRET})
    )
    assert channel.send(NOTICE, DID) == "200 ok"
    (request,) = receiver.delivered
    assert request.method == "POST" and request.path == f"/hook/{HOOK_SECRET}"
    assert request.json == ch.webhook_payload(NOTICE, DID)
    assert request.header("Content-Type") == "application/json"
    assert request.header("Idempotency-Key") == DID
    assert request.header("Authorization") == HEADER_SECRET


def test_webhook_statuses(receiver: HttpReceiver) -> None:
    channel = build_channel("hook", webhook(f"{receiver.url}/hook"))
    receiver.mode = "error"
    with pytest.raises(AlertDeliveryError, match="HTTP 500") as error:
        channel.send(NOTICE, DID)
    assert error.value.retry_after is None  # type: ignore[attr-defined]
    assert error.value.service == "alert_channel:hook" and error.value.operation == "send"

    receiver.mode = "throttle"
    receiver.retry_after = 13
    with pytest.raises(AlertDeliveryError, match="HTTP 429") as error:
        channel.send(NOTICE, DID)
    assert error.value.retry_after == 13  # type: ignore[attr-defined]

    receiver.mode = "reject"
    with pytest.raises(AlertRefused, match=r"HTTP 400.*invalid_payload"):
        channel.send(NOTICE, DID)
    assert receiver.delivered == [] and len(receiver.requests) == 3


def test_receiver_gone_then_back_on_the_same_port(receiver: HttpReceiver) -> None:
    channel = build_channel("hook", webhook(f"{receiver.url}/hook"))
    port = receiver.port
    receiver.stop()
    with pytest.raises(AlertDeliveryError, match="ConnectionError") as error:
        channel.send(NOTICE, DID)
    assert "retried later" in str(error.value)
    receiver.start()
    assert receiver.port == port
    assert channel.send(NOTICE, DID) == "200 ok"
    assert len(receiver.delivered) == 1


def test_hanging_receiver_times_out(receiver: HttpReceiver) -> None:
    channel = build_channel("hook", webhook(f"{receiver.url}/hook", timeout="300ms"))
    receiver.mode = "hang"
    started = time.monotonic()
    with pytest.raises(AlertDeliveryError, match="Timeout"):
        channel.send(NOTICE, DID)
    assert time.monotonic() - started < 2.0
    receiver.mode = "ok"  # lets the held request go: it stays abandoned
    assert channel.send(NOTICE, DID) == "200 ok"
    assert len(receiver.abandoned) == 1 and len(receiver.delivered) == 1
    assert receiver.abandoned[0] not in receiver.delivered


def test_stopping_a_hanging_receiver_lets_go_and_closes_the_port(receiver: HttpReceiver) -> None:
    channel = build_channel("hook", webhook(f"{receiver.url}/hook", timeout="200ms"))
    receiver.mode = "hang"
    with pytest.raises(AlertDeliveryError, match="Timeout"):
        channel.send(NOTICE, DID)
    started = time.monotonic()
    receiver.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(AlertDeliveryError, match="Connection refused"):
        channel.send(NOTICE, DID)
    assert len(receiver.requests) == 1 and receiver.abandoned == receiver.requests


def test_redirect_is_refused_not_followed() -> None:
    # a 3xx would carry the body and a secret path elsewhere: treated as a config error
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        channel = build_channel("hook", webhook(f"http://127.0.0.1:{server.server_address[1]}/x"))
        with pytest.raises(AlertRefused, match=r"HTTP 307.*redirect"):
            channel.send(NOTICE, DID)
    finally:
        server.shutdown()
        server.server_close()


# --- breaker ------------------------------------------------------------------------------------------


def test_dead_receiver_opens_its_own_circuit_only(receiver: HttpReceiver) -> None:
    with HttpReceiver() as other:
        dead = build_channel("dead", webhook(f"{receiver.url}/hook"), BREAKER)
        alive = build_channel("alive", webhook(f"{other.url}/hook"), BREAKER)
        receiver.mode = "error"
        with pytest.raises(AlertDeliveryError):
            dead.send(NOTICE, DID)
        with pytest.raises(CircuitOpenError):  # the fail_max-th failure trips the circuit
            dead.send(NOTICE, DID)
        receiver.mode = "ok"
        started = time.monotonic()
        with pytest.raises(CircuitOpenError, match="alert_channel:dead: circuit open") as error:
            dead.send(NOTICE, DID)
        assert time.monotonic() - started < 0.1
        assert error.value.retryable
        assert len(receiver.requests) == 2  # the open circuit did not call the receiver
        assert alive.send(NOTICE, DID) == "200 ok"
        assert len(other.delivered) == 1


def test_refusals_do_not_open_the_circuit(receiver: HttpReceiver) -> None:
    channel = build_channel("picky", webhook(f"{receiver.url}/hook"), BREAKER)
    receiver.mode = "reject"
    for _ in range(4):
        with pytest.raises(AlertRefused):
            channel.send(NOTICE, DID)
    receiver.mode = "ok"
    assert channel.send(NOTICE, DID) == "200 ok"


# --- slack --------------------------------------------------------------------------------------------


def test_slack_incoming_webhook(receiver: HttpReceiver) -> None:
    channel = build_channel("slack", SlackChannel(type="slack", url=f"{receiver.url}/services/{HOOK_SECRET}"))
    assert channel.send(NOTICE, DID) == "200 ok"
    (request,) = receiver.delivered
    assert request.json == ch.slack_payload(NOTICE)
    assert request.header("Content-Type") == "application/json"
    receiver.mode = "throttle"
    with pytest.raises(AlertDeliveryError) as error:
        channel.send(NOTICE, DID)
    assert error.value.retry_after == 7  # type: ignore[attr-defined]


# --- telegram -----------------------------------------------------------------------------------------


def telegram(receiver: HttpReceiver, **extra: Any) -> TelegramChannel:
    return TelegramChannel.model_validate(
        {"type": "telegram", "token": TOKEN, "chat_id": "-1001", "base_url": f"{receiver.url}/", **extra}
    )


def test_telegram_send_message(receiver: HttpReceiver) -> None:
    channel = build_channel("tg", telegram(receiver))
    assert channel.send(NOTICE, DID) == "ok=true message_id=1"
    assert channel.send(NOTICE, DID) == "ok=true message_id=2"
    request = receiver.delivered[0]
    assert request.path == f"/bot{TOKEN}/sendMessage"
    assert request.json == ch.telegram_payload(NOTICE, "-1001")


def test_telegram_errors_and_scrubbed_token(receiver: HttpReceiver) -> None:
    channel = build_channel("tg", telegram(receiver))
    receiver.mode = "reject"
    with pytest.raises(AlertRefused, match="ok=false error_code=400: Bad Request: chat not found") as refused:
        channel.send(NOTICE, DID)
    receiver.mode = "throttle"
    receiver.retry_after = 21
    with pytest.raises(AlertDeliveryError) as throttled:
        channel.send(NOTICE, DID)
    assert throttled.value.retry_after == 21  # type: ignore[attr-defined]
    receiver.mode = "error"
    with pytest.raises(AlertDeliveryError, match="error_code=500") as failed:
        channel.send(NOTICE, DID)
    receiver.stop()
    with pytest.raises(AlertDeliveryError) as gone:
        channel.send(NOTICE, DID)
    # the receiver echoed the path (with the token) in its error bodies; requests quotes it too
    assert all(TOKEN in request.path for request in receiver.requests)
    assert str(refused.value).endswith("chat not found (***)")
    assert "url: ***" in str(gone.value)
    for error in (refused, throttled, failed, gone):
        secrets_absent(str(error.value), TOKEN, TOKEN.split(":")[1])


# --- secrets ------------------------------------------------------------------------------------------


def test_webhook_secrets_never_reach_errors_or_answers(receiver: HttpReceiver) -> None:
    url = f"{receiver.url}/hook/{HOOK_SECRET}?key=qsecret987"
    channel = build_channel("hook", webhook(url, headers={"X-Auth": HEADER_SECRET}))
    receiver.mode = "reject"  # the receiver's error body quotes the secret path
    with pytest.raises(AlertRefused) as refused:
        channel.send(NOTICE, DID)
    assert receiver.requests[-1].path.endswith("qsecret987")  # the secret really was sent
    receiver.stop()
    with pytest.raises(AlertDeliveryError) as gone:
        channel.send(NOTICE, DID)
    texts = [str(refused.value), str(gone.value)]
    assert "at ***" in texts[0] and f"127.0.0.1:{receiver.port}" in texts[0]
    for text in texts:
        secrets_absent(text, HOOK_SECRET, "qsecret987", "XyZsecretPathPart", HEADER_SECRET)


def test_basic_auth_in_url_is_masked() -> None:
    port = free_port()  # nothing listens: connection refused
    channel = build_channel("hook", webhook(f"http://user:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/x"))
    with pytest.raises(AlertDeliveryError) as error:
        channel.send(NOTICE, DID)
    secrets_absent(str(error.value), PASSWORD, quote(PASSWORD, safe=""), "w/rd-secret", "rd-secret")


# --- email --------------------------------------------------------------------------------------------


def email(port: int, **extra: Any) -> EmailChannel:
    return EmailChannel.model_validate(
        {
            "type": "email",
            "host": "127.0.0.1",
            "port": port,
            "sender": "rof@example.org",
            "recipients": ["ops@example.org", "oncall@example.org"],
            "timeout": "5s",
            **extra,
        }
    )


def test_email_delivers_one_message_per_notice() -> None:
    with SmtpReceiver() as smtp:
        channel = build_channel("mail", email(smtp.port))
        answer = channel.send(NOTICE, DID)
        assert answer == "250 2.0.0 Ok: queued as Q00001"
        (message,) = smtp.messages
        assert smtp.envelopes == [("rof@example.org", ["ops@example.org", "oncall@example.org"])]
        assert message["Message-ID"] == f"<{DID}@rof-pipelines>"
        assert message["Subject"] == "[rof FIRING critical] run_failed job=ingest market=XNYS"
        assert message["From"] == "rof@example.org"
        assert message["To"] == "ops@example.org, oncall@example.org"
        body = message.get_content()
        assert "ingest failed for XNYS <see run 42> & more" in body
        assert "Labels: job=ingest market=XNYS" in body and "At: 2024-05-06T07:08:09+00:00" in body


def test_email_over_1000_bytes_is_accepted() -> None:
    """Regression: smtplib sends the bytes as given, so a message with bare LF line ends reached
    aiosmtpd as one line over its 1,000-byte limit ("500 Line too long"). The message must use CRLF
    (email.policy.SMTP)."""
    values = {f"figure_{i:02d}": f"value {i} " + "x" * 40 for i in range(40)}
    notice = make_notice(**values)
    raw = ch.email_message(notice, DID, "rof@example.org", ["ops@example.org"]).as_bytes(
        policy=ch.SMTP_POLICY
    )
    assert len(raw) > 1000 and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    with SmtpReceiver() as smtp:
        answer = build_channel("mail", email(smtp.port)).send(notice, DID)
        assert answer == "250 2.0.0 Ok: queued as Q00001"
        (message,) = smtp.messages
        body = message.get_content()
        assert len(body.encode()) > 1000
        for name, value in values.items():
            assert name in body and value in body


def test_email_recipient_refusals() -> None:
    with SmtpReceiver() as smtp:
        channel = build_channel("mail", email(smtp.port))
        smtp.refuse = {"oncall@example.org"}
        answer = channel.send(NOTICE, DID)  # one taken: sent, the refusal noted
        assert answer.startswith("250 ") and answer.endswith("refused: oncall@example.org 550")
        assert smtp.envelopes[-1][1] == ["ops@example.org"]
        smtp.refuse = {"oncall@example.org", "ops@example.org"}
        with pytest.raises(AlertRefused, match="550"):
            channel.send(NOTICE, DID)
        smtp.refuse = set()
        smtp.data_reply = "451 4.3.0 try again later"
        with pytest.raises(AlertDeliveryError, match="451"):
            channel.send(NOTICE, DID)
        assert len(smtp.messages) == 1


def test_email_login_and_scrubbed_password() -> None:
    with SmtpReceiver(users={"rof": PASSWORD}) as smtp:
        good = build_channel("mail", email(smtp.port, username="rof", password=PASSWORD))
        assert good.send(NOTICE, DID).startswith("250 ")
        bad = build_channel("mail2", email(smtp.port, username="rof", password=PASSWORD + "x"))
        with pytest.raises(AlertRefused, match="535") as error:
            bad.send(NOTICE, DID)
        secrets_absent(str(error.value), PASSWORD)
        anonymous = build_channel("mail3", email(smtp.port))
        with pytest.raises(AlertRefused, match="530"):
            anonymous.send(NOTICE, DID)
        assert len(smtp.messages) == 1


def test_email_server_down_is_transient() -> None:
    channel = build_channel("mail", email(free_port()))
    with pytest.raises(AlertDeliveryError, match="ConnectionRefusedError"):
        channel.send(NOTICE, DID)


# --- TLS (a self-signed certificate made with the openssl command) -------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def test_email_starttls(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    smtp = SmtpReceiver(
        users={"rof": PASSWORD}, tls_context=server_context(certificate), require_starttls=True
    )
    with smtp:
        channel = build_channel(
            "tls", email(smtp.port, security="starttls", username="rof", password=PASSWORD)
        )
        with pytest.raises(AlertRefused, match="certificate does not verify"):  # not trusted yet
            channel.send(NOTICE, DID)
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        assert channel.send(NOTICE, DID).startswith("250 ")
        plain = build_channel("plain", email(smtp.port))
        with pytest.raises(AlertRefused, match="530"):  # the server insists on STARTTLS
            plain.send(NOTICE, DID)
        assert len(smtp.messages) == 1


def test_email_implicit_tls(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with SmtpReceiver(implicit_tls=server_context(certificate)) as smtp:
        channel = build_channel("smtps", email(smtp.port, security="ssl"))
        assert channel.send(NOTICE, DID).startswith("250 ")
        assert smtp.messages[0]["Message-ID"] == f"<{DID}@rof-pipelines>"
