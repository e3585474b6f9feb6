"""Secrets out of every log line, whoever logs it and at whatever level.

Our own code logs no secret; but at DEBUG, traitlets logs every config value ("Config
changed: {...}", with a database password or a service token), and libraries log
URLs and headers. The hub, Kore, the CLI and the built-in LMS install one log record
factory that rewrites each record before any handler sees it: passwords in URLs,
JWTs (id_tokens, client assertions, access tokens), private keys, ``token ...`` /
``Bearer ...`` credentials, secret-named values in reprs and secret query parameters
become ``***``.
"""

import logging
import re

MASK = "***"

_NAMES_OF_SECRETS = (
    r"[\w-]*(?:token|secret|password|passwd|assertion|crypt_key|private_key|api_key)"
)

_RULES: list[tuple[re.Pattern, str]] = [
    # scheme://user:password@host (a PostgreSQL URL, a keyset URL with basic auth)
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@'\"]*:)[^/\s@'\"]+@", re.I), rf"\1{MASK}@"),
    # A JWT: header.payload.signature, each base64url (the header starts with '{"').
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        MASK,
    ),
    # Authorization header values.
    # (a credential has a digit: "token expired" stays readable)
    (
        re.compile(r"\b(token|bearer|basic)(\s+)(?=[\w.~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}", re.I),
        rf"\1\2{MASK}",
    ),
    # 'api_token': 'abc', "client_secret": "abc", cookie_secret=b'abc' in reprs and dumps.
    (
        re.compile(rf"(['\"]?{_NAMES_OF_SECRETS}['\"]?\s*[:=]\s*b?)(['\"])(?:(?!\2).)*\2", re.I),
        rf"\1\2{MASK}\2",
    ),
    # Secret query or form parameters in a logged URL or body.
    (
        re.compile(r"([?&;](?:token|code|state|_xsrf)=)[^&\s'\"]+", re.I),
        rf"\1{MASK}",
    ),
    (
        re.compile(
            r"(\b(?:client_assertion|access_token|id_token|refresh_token|password)=)[^&\s'\"]+",
            re.I,
        ),
        rf"\1{MASK}",
    ),
]


def redact(text: str) -> str:
    """``text`` with every secret this module recognises replaced by ``***``."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


_installed = False


def install() -> None:
    """Redact every log record of this process from now on (idempotent).

    A record factory, not a filter: filters sit on one logger or handler, while
    records of every library reach their handlers through many loggers.
    """
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(redacting_record)
    _installed = True
