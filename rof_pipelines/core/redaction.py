"""Keeping secrets out of text: every error, log line and metadata value that might carry a password
goes through here, so there is one set of rules and one place to fix them.

Secrets are the values of keys whose name looks secret (``db_password``, ``token``, ``api_key``,
``url``, ``dsn``, ...) and the credentials inside URLs. URLs are taken apart with
:mod:`urllib.parse`, including passwords holding a raw ``@``, ``:`` or ``/``, IPv6 hosts, and URLs that
do not parse at all (then everything after ``scheme://`` counts as secret).
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
HIDDEN_URL = "<hidden: not a valid URL>"

# Substrings that mark a key as secret wherever they occur (misspellings of "password" included),
# and words that do so only as a whole part of the name ("key" but not "monkey").
_SECRET_SUBSTRINGS = re.compile(r"pa?s+w|passphrase|secret|token|credential|apikey|private")
_SECRET_WORDS = {"key", "pwd", "pass", "auth", "url", "uri", "dsn", "conninfo", "cert"}
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")


def looks_secret(name: object) -> bool:
    """Whether a key name (or any part of a dotted key path) looks like it holds a secret."""
    lowered = str(name).lower()
    if _SECRET_SUBSTRINGS.search(lowered):
        return True
    return any(word in _SECRET_WORDS for word in _WORD_SPLIT.split(lowered))


@dataclass(frozen=True)
class UrlCredentials:
    """A URL's parts as far as secrets are concerned.

    ``userinfo`` is what precedes the host (``user:password``), found at the *last* ``@`` when a raw
    ``/``, ``?`` or ``#`` in the password cut urllib's authority short. ``parsed`` is False when the
    URL does not parse even then; ``encoded`` is False when it parses only after that repair, i.e.
    a client reading it as written would misread it.
    """

    scheme: str
    userinfo: str | None
    after_userinfo: str  # host[:port] and the rest, as written
    parsed: bool
    encoded: bool

    @property
    def username(self) -> str | None:
        if self.userinfo is None or ":" not in self.userinfo:
            return None
        return self.userinfo.partition(":")[0]

    @property
    def password(self) -> str | None:
        """The password, or the whole userinfo when it has no ``:`` (a token in the user part)."""
        if self.userinfo is None:
            return None
        return self.userinfo.partition(":")[2] if ":" in self.userinfo else self.userinfo


def split_url(url: str) -> UrlCredentials | None:
    """``url``'s credentials, or None when ``url`` is not ``scheme://...`` at all."""
    scheme, sep, tail = url.partition("://")
    if not sep or not _URL_SCHEME.match(scheme):
        return None
    authority_end = min((i for i in (tail.find(c) for c in "/?#") if i >= 0), default=len(tail))
    if "@" not in tail:
        return UrlCredentials(scheme, None, tail, parsed=_parses(url), encoded=True)
    # Credentials end at the last "@": the host cannot hold one, a password can (raw or encoded).
    userinfo, _, after = tail.rpartition("@")
    encoded = "@" not in tail[authority_end:] and _parses(url)
    return UrlCredentials(
        scheme, userinfo, after, parsed=_parses(f"{scheme}://user@{after}"), encoded=encoded
    )


def _parses(url: str) -> bool:
    """Whether urllib reads ``url``'s host and port (bracketed IPv6 hosts included)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return False
    return True


def mask_url(url: str) -> str:
    """``amqp://guest:p@ss/w:rd@[::1]:5672/`` -> ``amqp://guest:***@[::1]:5672/``; a URL that does
    not parse keeps only its scheme. Anything that is not a URL comes back unchanged."""
    parts = split_url(url)
    if parts is None:
        return url
    if not parts.parsed:
        return f"{parts.scheme}://{HIDDEN_URL}"
    if parts.userinfo is None:
        return url
    user = parts.username
    shown = f"{user}:{MASK}" if user and _plain(user) else MASK
    return f"{parts.scheme}://{shown}@{parts.after_userinfo}"


def _plain(text: str) -> bool:
    return not any(char in text for char in "/?#[]@")


def spellings(secret: str) -> set[str]:
    """Every way a secret can reach a message: as written, percent-decoded and percent-encoded; for
    a URL, also its password in those spellings (all of it after ``scheme://`` if it does not parse)."""
    found: set[str] = set()
    parts = split_url(secret)
    pieces = [secret]
    if parts is not None:
        pieces = [parts.password or ""]  # a URL as written is replaced by its masked form first
        if not parts.parsed:
            pieces += [secret, parts.userinfo or "", parts.after_userinfo]
    for piece in pieces:
        if piece:
            found |= {piece, unquote(piece), quote(piece, safe=""), quote_plus(piece, safe="")}
    return {spelling for spelling in found if spelling}


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every secret hidden: a secret URL becomes its masked form, every other spelling
    of a secret becomes ``***``. Driver messages can echo connection strings, and nothing this project
    raises, logs or records may carry a password. Longer spellings go first, so a secret that contains
    another is hidden whole."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if split_url(secret) is not None:
            text = text.replace(secret, mask_url(secret))
    every = set().union(*(spellings(s) for s in secrets if s)) if secrets else set()
    for spelling in sorted(every, key=len, reverse=True):
        text = text.replace(spelling, MASK)
    return text


def error_message(label: str, exc: BaseException, *secrets: str) -> str:
    """``"<label>: <ExceptionType>: <message>"`` with the secrets scrubbed."""
    return scrub(f"{label}: {type(exc).__name__}: {exc}", *secrets)


def secret_values(data: Any, *, secret: bool = False) -> list[str]:
    """The strings in parsed configuration data that are secret: every value under a key that looks
    secret, and URLs with credentials anywhere. For scrubbing text derived from data not yet
    validated (an invalid edit, an unknown key)."""
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            found += secret_values(value, secret=secret or looks_secret(key))
    elif isinstance(data, list | tuple):
        for value in data:
            found += secret_values(value, secret=secret)
    elif isinstance(data, str):
        parts = split_url(data)
        if secret or (parts is not None and (parts.userinfo is not None or not parts.parsed)):
            found.append(data)
    elif secret and data is not None and not isinstance(data, bool):
        found.append(str(data))
    return found


def redact_data(data: Any, *, secret: bool = False) -> Any:
    """A copy of parsed data fit to show: values under secret-looking keys starred, URLs masked."""
    if isinstance(data, Mapping):
        return {key: redact_data(value, secret=secret or looks_secret(key)) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(value, secret=secret) for value in data]
    if secret and data is not None:
        return mask_url(data) if isinstance(data, str) and split_url(data) else MASK
    if isinstance(data, str):
        return mask_url(data)
    return data


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 30, 0)]}... ({len(text) - limit + 30} more chars)"


def all_spellings(secrets: Iterable[str]) -> set[str]:
    """The union of :func:`spellings`, for tests and callers that search text for secrets."""
    return set().union(*(spellings(s) for s in secrets if s))
