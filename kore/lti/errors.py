"""What can go wrong when Kore talks to the LMS, as domain exceptions.

Library code raises these; the sync jobs turn them into per-student results and the
routes into JSON. Each carries the HTTP status (None when no answer came) and a
message a person can act on; the LMS's own words, if it sent any, are in it.
"""

import json
import unicodedata

#: How much of an LMS's error text is kept in a message.
LMS_TEXT_LIMIT = 300


class LTIServiceError(Exception):
    """A call to the LMS's LTI Advantage services failed.

    ``status``: the LMS's HTTP status, or None if it never answered. ``lms_message``:
    what the LMS said, cleaned for display ("" if nothing).
    """

    def __init__(self, message: str, *, status: int | None = None, lms_message: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.lms_message = lms_message


class TokenRefused(LTIServiceError):
    """The LMS's token endpoint refused Kore's client assertion or the scopes asked."""


class LMSUnavailable(LTIServiceError):
    """No usable answer after all retries: timeouts, refused connections, 429 or 5xx."""


class OutcomeUnknown(LMSUnavailable):
    """A write the LMS may or may not have carried out: no answer in time, the connection
    dropped after the request went out, or a 500/502/504. Sending it again blindly could
    duplicate it (a second line item) or be refused (a score's 409): the caller checks
    first (re-lists line items, reads results)."""


class BadLMSResponse(LTIServiceError):
    """The LMS answered 2xx with something that is not what the spec says (bad JSON)."""


def clean(text: str, limit: int = LMS_TEXT_LIMIT) -> str:
    """Text from the LMS made safe to show and log: one line, no control characters."""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lms_message(body: bytes) -> str:
    """What an LMS error body says: OAuth's error/error_description, a message, or text."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return clean(body.decode("utf-8", errors="replace"))
    if isinstance(data, dict):
        parts = []
        for key in ("error", "error_description", "message", "reason", "detail"):
            value = data.get(key)
            if isinstance(value, dict):  # e.g. {"error": {"message": ...}} (Canvas-like)
                value = value.get("message") or value.get("code")
            if isinstance(value, str | int) and str(value) not in parts:
                parts.append(str(value))
        if isinstance(data.get("errors"), list):
            parts.extend(
                str(e.get("message", e)) if isinstance(e, dict) else str(e)
                for e in data["errors"][:3]
            )
        if parts:
            return clean(": ".join(parts))
    return clean(body.decode("utf-8", errors="replace"))
