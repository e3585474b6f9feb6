"""Secrets out of every log line, whoever logs it and at whatever level.

Our own code logs no secret; but at DEBUG, traitlets logs every config value ("Config
changed: {...}", with a database password or a service token), and libraries log
URLs and headers. The hub, Kore, the CLI and the built-in LMS install one log record
factory whose records are redacted before anything reads their text: passwords in URLs,
JWTs (id_tokens, client assertions, access tokens), private keys, ``token ...`` /
``Bearer ...`` credentials, secret-named values in reprs and secret query parameters
become ``***``.

Redaction happens when a record's text is first read (a handler formatting it, or any
code reading ``msg``, ``args`` or ``getMessage()``), not when it is made: the DEBUG
records that loggers make and no handler writes (traitlets sets the application's
logger to DEBUG and its handler to the log level) cost no redaction.
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


#: Set in a record's ``__dict__`` once its text is redacted: the message, redacted.
_REDACTED = "_ananke_redacted_message"


class RedactedRecord(logging.LogRecord):
    """A log record whose text is redacted when something first reads it.

    ``msg`` and ``args`` are kept where LogRecord keeps them (``__dict__``, so that
    ``copy``, pickling and ``makeLogRecord`` work as for any record), behind properties
    that redact first: the formatted message, when it holds a secret, becomes ``msg``
    (and ``args`` None). Setting either again (a filter rewriting a record) redacts the
    new text too. A traceback is redacted when a formatter stores it (``exc_text``).
    """

    def _redact(self) -> None:
        state = self.__dict__
        if _REDACTED in state:
            return
        msg, args = state["msg"], state["args"]
        try:
            message = str(msg)
            if args:
                message = message % args
        except Exception:  # a broken format string: the handler reports it
            return
        clean = redact(message)
        if clean != message:
            state["msg"], state["args"] = clean, None
        state[_REDACTED] = clean

    @property
    def msg(self):
        self._redact()
        return self.__dict__["msg"]

    @msg.setter
    def msg(self, value):
        self.__dict__["msg"] = value
        self.__dict__.pop(_REDACTED, None)

    @property
    def args(self):
        self._redact()
        return self.__dict__["args"]

    @args.setter
    def args(self, value):
        self.__dict__["args"] = value
        self.__dict__.pop(_REDACTED, None)

    def getMessage(self) -> str:
        self._redact()
        message = self.__dict__.get(_REDACTED)
        return super().getMessage() if message is None else message

    @property
    def exc_text(self):
        return self.__dict__.get("exc_text")

    @exc_text.setter
    def exc_text(self, value):
        # Formatters store the formatted traceback here before writing it.
        self.__dict__["exc_text"] = redact(value) if value else value


def _redact_now(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record of another record class at once (see install)."""
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


_installed = False


def install() -> None:
    """Redact every log record of this process from now on (idempotent).

    A record factory, not a filter: filters sit on one logger or handler, while
    records of every library reach their handlers through many loggers. Its records
    (``RedactedRecord``) are redacted when first read; should another library have
    installed a factory of its own first, its records are redacted when made.
    """
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()
    if make_record is logging.LogRecord:
        logging.setLogRecordFactory(RedactedRecord)
    else:

        def redacting_record(*args, **kwargs) -> logging.LogRecord:
            return _redact_now(make_record(*args, **kwargs))

        logging.setLogRecordFactory(redacting_record)
    _installed = True
