"""Notification channels: how one notice reaches one receiver (the log, a webhook, Slack, Telegram,
e-mail), and what the receiver answered.

Each channel's ``send`` either returns the receiver's answer as short text (``"200 ok"``,
``"250 2.0.0 Ok: queued"``, ``"ok=true message_id=7"``), raises :class:`AlertDeliveryError` when a
later try may succeed (the receiver is down, timed out, answered 5xx, 408 or 429; ``retry_after``
holds the seconds it asked for, if any) or :class:`AlertRefused` when it will not (other 4xx, a
refused address, a bad token). Every send goes through the breaker of ``alert_channel:<name>``, so a
dead receiver opens its own circuit and fails fast without holding up the other channels.

The formats are pure functions (:func:`log_line`, :func:`webhook_payload`, :func:`slack_payload`,
:func:`telegram_payload`, :func:`email_message`) so they can be checked without a network. No text
this module returns or raises carries a channel's secrets (URL, token, password, header values).
"""

import json
import logging
import math
import smtplib
import ssl
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY  # CRLF line ends: smtplib sends bytes as given
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from rof_pipelines.adapters.breakers import guarded_call
from rof_pipelines.alerting_settings import (
    EmailChannel,
    LogChannel,
    SlackChannel,
    TelegramChannel,
    WebhookChannel,
)
from rof_pipelines.core.alerts.model import Notice, fingerprint
from rof_pipelines.core.redaction import MASK, clip, scrub
from rof_pipelines.errors import (
    AlertDeliveryError,
    AlertRefused,
    ConfigError,
    ErrorMap,
    ErrorRule,
    RofError,
)
from rof_pipelines.settings import CircuitBreakerConfig

LOGGER_NAME = "rof_pipelines.alerts"
ANSWER_LIMIT = 200  # characters of a receiver's answer kept (the outbox's ``answer`` column)
TEXT_LIMIT = 3000  # Slack's section block limit; Telegram's message limit is 4096
MESSAGE_ID_DOMAIN = "rof-pipelines"

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
_SLACK_MARKERS = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
_SLACK_RESOLVED = ":white_check_mark:"


# --- formats (pure) -----------------------------------------------------------------------------------


def _labels_text(labels: Mapping[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def headline(notice: Notice) -> str:
    """``FIRING critical run_failed job=x market=y``: what every format starts with."""
    parts = [notice.event.upper(), notice.severity, notice.rule, _labels_text(notice.labels)]
    return " ".join(part for part in parts if part)


def log_line(notice: Notice) -> tuple[int, str]:
    """The level (by severity; a resolved notice is INFO) and the line the log channel writes."""
    level = logging.INFO if notice.event == "resolved" else _LEVELS.get(notice.severity, logging.WARNING)
    return level, f"ALERT {headline(notice)}: {notice.summary}"


def _jsonable(value: Any) -> Any:
    """Strict JSON: times as ISO text, non-finite floats as null, anything else unknown as text."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def webhook_payload(notice: Notice, delivery_id: str) -> dict[str, Any]:
    """The generic webhook's JSON body: the notice, with ids a receiver can deduplicate on."""
    return {
        "id": notice.notice_id,
        "delivery_id": delivery_id,
        "event": notice.event,
        "rule": notice.rule,
        "severity": notice.severity,
        "labels": dict(notice.labels),
        "summary": notice.summary,
        "values": _jsonable(notice.values),
        "at": notice.at.isoformat(),
        "fingerprint": notice.fingerprint,
    }


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn reads ``&``, ``<`` and ``>`` as markup; a summary must not become a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (the notification preview) and one mrkdwn section."""
    marker = _SLACK_RESOLVED if notice.event == "resolved" else _SLACK_MARKERS.get(notice.severity, "")
    title = f"[{notice.event.upper()}] {notice.severity} {notice.rule}"
    text = f"{marker} {title}: {notice.summary}"
    lines = [f"{marker} *{_slack_escape(title)}*", _slack_escape(notice.summary)]
    if notice.labels:
        lines.append(
            "*Labels:* "
            + " ".join(f"`{_slack_escape(k)}={_slack_escape(v)}`" for k, v in sorted(notice.labels.items()))
        )
    if notice.values:
        lines.append("*Values:* " + _slack_escape(_values_text(notice.values)))
    lines.append(f"*At:* {notice.at.isoformat()}")
    section = {"type": "section", "text": {"type": "mrkdwn", "text": clip("\n".join(lines), TEXT_LIMIT)}}
    return {"text": clip(_slack_escape(text), TEXT_LIMIT), "blocks": [section]}


def _values_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(_jsonable(value))}" for key, value in sorted(values.items()))


def plain_text(notice: Notice) -> str:
    """The notice as plain lines (Telegram's message, the e-mail's body)."""
    lines = [f"[{notice.event.upper()}] {notice.severity} {notice.rule}", notice.summary, ""]
    if notice.labels:
        lines.append(f"Labels: {_labels_text(notice.labels)}")
    if notice.values:
        lines.append(f"Values: {_values_text(notice.values)}")
    lines.append(f"At: {notice.at.isoformat()}")
    lines.append(f"Alert: {notice.fingerprint}  Notice: {notice.notice_id}")
    return "\n".join(lines)


def telegram_payload(notice: Notice, chat_id: str) -> dict[str, Any]:
    """``sendMessage``'s body: plain text (no parse_mode, so nothing in a summary needs escaping)."""
    return {"chat_id": chat_id, "text": clip(plain_text(notice), 4000), "disable_web_page_preview": True}


def email_subject(notice: Notice) -> str:
    parts = [f"[rof {notice.event.upper()} {notice.severity}]", notice.rule, _labels_text(notice.labels)]
    return " ".join(part for part in parts if part)


def email_message(notice: Notice, delivery_id: str, sender: str, recipients: Iterable[str]) -> EmailMessage:
    """One e-mail per notice; ``Message-ID`` is the delivery's id, so a repeat can be dropped."""
    message = EmailMessage()
    message["Subject"] = email_subject(notice)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(notice.at.astimezone(UTC))
    message["Message-ID"] = f"<{delivery_id}@{MESSAGE_ID_DOMAIN}>"
    message["X-Rof-Alert"] = notice.fingerprint
    message.set_content(plain_text(notice) + "\n")
    return message


def test_notice(now: datetime) -> Notice:
    """A notice for ``rof alerts test CHANNEL``: its own id every time, so no receiver drops it."""
    return Notice(
        notice_id=uuid.uuid4().hex[:24],
        event="test",
        rule="channel_test",
        fingerprint=fingerprint("channel_test", {}),
        labels={},
        severity="info",
        summary="test notification from rof-pipelines: this channel works",
        at=now,
    )


test_notice.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


# --- error tables -------------------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and what it wraps (causes, contexts, urllib3's ``reason``, exception args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 20:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo += [item for item in nested if isinstance(item, BaseException)]


def _certificate_rejected(exc: BaseException) -> bool:
    """the receiver's TLS certificate did not verify"""
    return any(isinstance(item, ssl.SSLCertVerificationError) for item in _causes(exc))


def _smtp_codes(exc: BaseException) -> list[int]:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return [code for code, _ in exc.recipients.values()]
    if isinstance(exc, smtplib.SMTPResponseException):
        return [exc.smtp_code]
    return []


def _smtp_temporary(exc: BaseException) -> bool:
    """an SMTP 4xx reply (greylisting, mailbox busy, try later)"""
    return any(400 <= code < 500 for code in _smtp_codes(exc))


def _smtp_permanent(exc: BaseException) -> bool:
    """an SMTP 5xx reply (recipient or sender refused, authentication failed)"""
    codes = _smtp_codes(exc)
    return bool(codes) and all(code >= 500 for code in codes)


_DOWN = "the receiver is down or unreachable; retried later"
_TLS = "the receiver's certificate does not verify; fix the receiver or the CA bundle"

HTTP_ERRORS = ErrorMap(
    "http",
    [
        ErrorRule(_certificate_rejected, AlertRefused, _TLS),
        ErrorRule(
            (
                requests.exceptions.InvalidURL,
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidHeader,
            ),
            AlertRefused,
            "fix the channel's URL or headers",
        ),
        ErrorRule(
            (
                requests.exceptions.ConnectionError,  # refused, reset, DNS, proxy
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
                OSError,
            ),
            AlertDeliveryError,
            _DOWN,
        ),
    ],
    default=AlertRefused,
)

SMTP_ERRORS = ErrorMap(
    "smtp",
    [
        ErrorRule(_certificate_rejected, AlertRefused, _TLS),
        ErrorRule(_smtp_temporary, AlertDeliveryError, "the mail server asked to try later"),
        ErrorRule(_smtp_permanent, AlertRefused, "the mail server refused the message"),
        ErrorRule((smtplib.SMTPNotSupportedError,), AlertRefused, "the mail server lacks what security asks"),
        # SMTPException is an OSError: a dropped connection, timeout, or a greeting that never came.
        ErrorRule((OSError, TimeoutError), AlertDeliveryError, _DOWN),
    ],
    default=AlertRefused,
)


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After``: seconds, or an HTTP date (seconds from now); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def delivery_error(message: str, retry_after: float | None = None) -> AlertDeliveryError:
    """An :class:`AlertDeliveryError` carrying ``retry_after`` (seconds the receiver asked to wait)."""
    error = AlertDeliveryError(message)
    error.retry_after = retry_after
    return error


# --- channels -----------------------------------------------------------------------------------------


class Channel(ABC):
    """One configured receiver. ``send`` is safe to call from several threads."""

    kind: ClassVar[str]
    errors: ClassVar[ErrorMap] = HTTP_ERRORS

    def __init__(self, name: str, breaker: CircuitBreakerConfig | None = None) -> None:
        self.name = name
        self.breaker = breaker

    @property
    def service(self) -> str:
        """The breaker's (and the errors') service name: one circuit per channel."""
        return f"alert_channel:{self.name}"

    @property
    def label(self) -> str:
        return f"alert channel {self.name} ({self.kind})"

    @property
    def timeout_s(self) -> float:
        """The longest one send may take: a claimed outbox row's lease must outlast it."""
        return 1.0

    def secrets(self) -> list[str]:
        """Every value that must not reach a message (a URL, a token, a password, header values)."""
        return []

    def scrub(self, text: str) -> str:
        return scrub(text, *self.secrets())

    def send(self, notice: Notice, delivery_id: str) -> str:
        """Deliver ``notice`` once; the receiver's answer, or AlertDeliveryError / AlertRefused."""
        translate = self.errors.translator(service=self.service, label=self.label, secrets=self.secrets())
        return guarded_call(
            self.service, self.breaker, translate, self._send, notice, delivery_id, operation="send"
        )

    @abstractmethod
    def _send(self, notice: Notice, delivery_id: str) -> str: ...


class LogChannelImpl(Channel):
    """The process log: always there, so a config with no receivers still shows its alerts."""

    kind = "log"

    def __init__(self, name: str, breaker: CircuitBreakerConfig | None = None) -> None:
        super().__init__(name, breaker)
        self.logger = logging.getLogger(LOGGER_NAME)

    def _send(self, notice: Notice, delivery_id: str) -> str:
        level, line = log_line(notice)
        self.logger.log(
            level, line, extra={"alert_fingerprint": notice.fingerprint, "delivery_id": delivery_id}
        )
        return "logged"


def _url_secrets(url: str) -> list[str]:
    """A URL and its path and query: Slack's and many webhooks' secret is the path, not a password,
    and HTTP clients quote the path alone in their errors."""
    found = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    if len(parts.path.strip("/")) >= 1:
        found += [tail, parts.path]
    if parts.query:
        found.append(parts.query)
    return found


def _display_url(url: str) -> str:
    """``scheme://host:port/***``: where it went, without what makes the URL a secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/{MASK}"


class _HttpChannel(Channel):
    """POST a JSON body; the status decides: 2xx sent, 408/429/5xx retry, anything else refused."""

    def __init__(self, name: str, url: str, timeout: timedelta, breaker: CircuitBreakerConfig | None) -> None:
        super().__init__(name, breaker)
        self.url = url
        self.timeout = timeout.total_seconds()

    @property
    def timeout_s(self) -> float:
        return self.timeout

    def secrets(self) -> list[str]:
        return _url_secrets(self.url)

    def headers(self, delivery_id: str) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    @abstractmethod
    def body(self, notice: Notice, delivery_id: str) -> dict[str, Any]: ...

    def _send(self, notice: Notice, delivery_id: str) -> str:
        data = json.dumps(self.body(notice, delivery_id), ensure_ascii=False).encode()
        response = requests.post(
            self.url,
            data=data,
            headers=self.headers(delivery_id),
            timeout=self.timeout,
            allow_redirects=False,  # a redirect would carry the body (and a token) somewhere else
        )
        with response:
            return self.answer(response)

    def _excerpt(self, response: requests.Response) -> str:
        text = " ".join(response.text.split())
        return self.scrub(clip(text, ANSWER_LIMIT))

    def answer(self, response: requests.Response) -> str:
        """The answer text for 2xx; the error for anything else."""
        excerpt = self._excerpt(response)
        if 200 <= response.status_code < 300:
            return f"{response.status_code} {excerpt}".strip()
        raise self.status_error(response, excerpt)

    def status_error(self, response: requests.Response, excerpt: str) -> RofError:
        status = response.status_code
        where = f"{self.label}: HTTP {status} from {_display_url(self.url)}"
        message = f"{where}: {excerpt}" if excerpt else where
        if status in (408, 429) or status >= 500:
            return delivery_error(message, _retry_after(response.headers.get("Retry-After")))
        if 300 <= status < 400:
            return AlertRefused(f"{message} (a redirect is not followed: configure the final URL)")
        return AlertRefused(message)


class WebhookChannelImpl(_HttpChannel):
    kind = "webhook"

    def __init__(
        self, name: str, config: WebhookChannel, breaker: CircuitBreakerConfig | None = None
    ) -> None:
        super().__init__(name, config.url.get_secret_value(), config.timeout, breaker)
        self.extra_headers = {key: value.get_secret_value() for key, value in config.headers.items()}

    def secrets(self) -> list[str]:
        return super().secrets() + [value for value in self.extra_headers.values() if value]

    def headers(self, delivery_id: str) -> dict[str, str]:
        return {**super().headers(delivery_id), **self.extra_headers, "Idempotency-Key": delivery_id}

    def body(self, notice: Notice, delivery_id: str) -> dict[str, Any]:
        return webhook_payload(notice, delivery_id)


class SlackChannelImpl(_HttpChannel):
    kind = "slack"

    def __init__(self, name: str, config: SlackChannel, breaker: CircuitBreakerConfig | None = None) -> None:
        super().__init__(name, config.url.get_secret_value(), config.timeout, breaker)

    def body(self, notice: Notice, delivery_id: str) -> dict[str, Any]:
        return slack_payload(notice)


class TelegramChannelImpl(_HttpChannel):
    kind = "telegram"

    def __init__(
        self, name: str, config: TelegramChannel, breaker: CircuitBreakerConfig | None = None
    ) -> None:
        self.token = config.token.get_secret_value()
        url = f"{config.base_url.rstrip('/')}/bot{self.token}/sendMessage"
        super().__init__(name, url, config.timeout, breaker)
        self.chat_id = config.chat_id

    def secrets(self) -> list[str]:
        return [self.token, *super().secrets()]

    def body(self, notice: Notice, delivery_id: str) -> dict[str, Any]:
        return telegram_payload(notice, self.chat_id)

    def answer(self, response: requests.Response) -> str:
        """Telegram answers JSON ``{"ok": ..., "result": {"message_id": N}}`` or an error description
        (with ``parameters.retry_after`` when throttled)."""
        try:
            reply = response.json()
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            return super().answer(response)
        if reply.get("ok") is True and 200 <= response.status_code < 300:
            result = reply.get("result") if isinstance(reply.get("result"), dict) else {}
            return f"ok=true message_id={result.get('message_id')}"
        description = self.scrub(clip(str(reply.get("description", "")), ANSWER_LIMIT))
        code = reply.get("error_code", response.status_code)
        message = f"{self.label}: Telegram ok=false error_code={code}: {description}"
        parameters = reply.get("parameters") if isinstance(reply.get("parameters"), dict) else {}
        status = response.status_code
        if status in (408, 429) or status >= 500:
            retry = parameters.get("retry_after")
            header = _retry_after(response.headers.get("Retry-After"))
            raise delivery_error(message, float(retry) if isinstance(retry, int | float) else header)
        raise AlertRefused(message)


class EmailChannelImpl(Channel):
    kind = "email"
    errors = SMTP_ERRORS

    def __init__(self, name: str, config: EmailChannel, breaker: CircuitBreakerConfig | None = None) -> None:
        super().__init__(name, breaker)
        self.config = config
        self.password = config.password.get_secret_value()

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def timeout_s(self) -> float:
        return self.config.timeout.total_seconds()

    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def _connect(self) -> smtplib.SMTP:
        config, timeout = self.config, self.config.timeout.total_seconds()
        if config.security == "ssl":
            return smtplib.SMTP_SSL(
                config.host, config.port, timeout=timeout, context=ssl.create_default_context()
            )
        smtp = smtplib.SMTP(config.host, config.port, timeout=timeout)
        try:
            if config.security == "starttls":
                smtp.ehlo()
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _send(self, notice: Notice, delivery_id: str) -> str:
        config = self.config
        message = email_message(notice, delivery_id, config.sender, config.recipients)
        smtp = self._connect()
        try:
            if config.username:
                smtp.login(config.username, self.password)
            smtp.ehlo_or_helo_if_needed()
            code, reply = smtp.mail(config.sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, config.sender)
            refused: dict[str, tuple[int, bytes]] = {}
            for recipient in config.recipients:
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    refused[recipient] = (code, reply)
            if len(refused) == len(config.recipients):
                raise smtplib.SMTPRecipientsRefused(refused)  # type: ignore[arg-type]
            # DATA's reply is the server's receipt ("250 2.0.0 Ok: queued as ..."); sendmail drops it.
            code, reply = smtp.data(message.as_bytes(policy=SMTP_POLICY))
            if code != 250:  # data() raises only when DATA itself is refused, not the message
                raise smtplib.SMTPDataError(code, reply)
        finally:
            _quit(smtp)
        answer = f"{code} {reply.decode(errors='replace')}"
        if refused:
            answer += "; refused: " + ", ".join(f"{rcpt} {c}" for rcpt, (c, _) in sorted(refused.items()))
        return self.scrub(clip(" ".join(answer.split()), ANSWER_LIMIT))


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye if the server still listens; a failing QUIT must not hide what went wrong."""
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


_BUILDERS: dict[type, Callable[..., Channel]] = {
    LogChannel: lambda name, config, breaker: LogChannelImpl(name, breaker),
    WebhookChannel: WebhookChannelImpl,
    SlackChannel: SlackChannelImpl,
    TelegramChannel: TelegramChannelImpl,
    EmailChannel: EmailChannelImpl,
}


def build_channel(name: str, config: Any, breaker: CircuitBreakerConfig | None = None) -> Channel:
    """The channel for one ``alerting.channels`` entry."""
    builder = _BUILDERS.get(type(config))
    if builder is None:
        raise ConfigError(f"alerting.channels.{name}: no channel of type {type(config).__name__}")
    return builder(name, config, breaker)
