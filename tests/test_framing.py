"""ananke_hub/framing.py: the signed state of a login in a frame, and the framing rules."""

import base64
import json
import time

import pytest
from tornado.web import create_signed_value

from ananke_hub import framing
from ananke_hub.framing import FramedState
from ananke_hub.registrations import Registration

SECRET = b"x" * 32


class Handler:
    """What FramedState needs of a tornado handler: create_signed_value."""

    def __init__(self, secret=SECRET):
        self.secret = secret

    def create_signed_value(self, name, value):
        return create_signed_value(self.secret, name, value)


def _with_payload(state: str, payload: dict) -> str:
    """The state with another value field, its signature unchanged."""
    parts = state.split("|")
    value = base64.b64encode(json.dumps(payload).encode()).decode()
    parts[4] = f"{len(value)}:{value}"
    return "|".join(parts)


def test_a_framed_state_names_its_nonce():
    state = FramedState(SECRET).create(Handler(), "n0nce")
    assert state.startswith("2|")
    assert FramedState(SECRET).nonce_state_of(state) == "n0nce"


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"),  # signature
        lambda s: _with_payload(s, {"nonce": "other", "exp": 2**40}),  # payload
        lambda s: "",
        lambda s: "eyJzdGF0ZV9pZCI6ICJ4In0=",  # upstream's cookie-bound state
    ],
)
def test_a_changed_state_names_no_nonce(change):
    state = FramedState(SECRET).create(Handler(), "n0nce")
    assert FramedState(SECRET).nonce_state_of(change(state)) is None


def test_another_secret_or_name_is_refused():
    state = FramedState(SECRET).create(Handler(b"y" * 32), "n0nce")
    assert FramedState(SECRET).nonce_state_of(state) is None
    # A value the hub signed for something else (e.g. a cookie) is no state.
    other = create_signed_value(SECRET, "jupyterhub-hub-login", json.dumps({"nonce": "n0nce"}))
    assert FramedState(SECRET).nonce_state_of(other.decode()) is None


def test_an_expired_state_is_refused(monkeypatch):
    state = FramedState(SECRET).create(Handler(), "n0nce")
    later = time.time() + framing.FRAMED_STATE_LIFETIME + 1
    monkeypatch.setattr(framing.time, "time", lambda: later)
    assert FramedState(SECRET).nonce_state_of(state) is None


def test_select_content_target():
    url = framing.select_content_url("https://hub.example.edu/hub/")
    assert url == "https://hub.example.edu/hub/?ananke_lti=select-content"
    assert framing.is_select_content(url)
    assert not framing.is_select_content("https://hub.example.edu/hub/")
    assert not framing.is_select_content("https://hub.example.edu/hub/?ananke_lti=other")


def test_frame_ancestors_of_registrations():
    reg = Registration(
        id="config",
        issuer="https://moodle.example.edu",
        client_ids=("c",),
        deployment_ids=(),
        authorize_url="https://login.example.edu:8443/mod/lti/auth.php",
        jwks_url="https://moodle.example.edu/mod/lti/certs.php",
    )
    origins = framing.registration_origins(reg)
    assert origins == ["https://login.example.edu:8443", "https://moodle.example.edu"]
    assert framing.frame_ancestors(origins) == (
        "frame-ancestors 'self' https://login.example.edu:8443 https://moodle.example.edu"
    )
    assert framing.frame_ancestors([]) == "frame-ancestors 'self'"
    assert framing.origin_of("javascript:alert(1)") == ""
