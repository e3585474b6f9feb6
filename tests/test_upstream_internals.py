"""The upstream internals Ananke still relies on, checked against the installed releases.

Each is a private name of an upstream whose version pyproject.toml bounds; a release
that renames or changes one fails here, with the file that uses it, before anything
subtler breaks. scripts/check-upstreams.sh runs this file against the newest releases.
Where the hub uses them:

- systemdspawner: ``systemd.RUN_ROOT`` and ``SystemdSpawner._expand_user_vars``
  (ananke_hub/spawner.py, the only importer of systemdspawner);
- nbgrader: ``ExchangeCollect._path_to_record`` and ``_sort_by_timestamp``
  (ananke_hub/lab/exchange.py, the only subclass of nbgrader's exchange);
- JupyterHub: the tornado setting ``oauth_no_confirm_list`` (courses/provision.py,
  ``trust_graders``). JupyterHub 6.1's public ways to skip the OAuth consent page are a
  service's ``oauth_no_confirm`` (in the config, or ``POST /hub/api/services/<name>`` at
  runtime) and a user's own servers; a grader server is another user's server
  (``/user/grader-<course>/``, OAuth client ``jupyterhub-user-grader-<course>``), and a
  service cannot name that client (``Service.oauth_client_id`` must start with
  ``service-``; the spawner makes the server's client anew at every start). No Spawner
  or Authenticator hook exists (checked in JupyterHub 6.1.1).
  Kore's ``?token=`` cookie is made with HubOAuth's public API (``user_for_token``,
  ``set_cookie``), not the private ``_persist_url_token_if_set``.
- JupyterHub: the rows ``BaseHandler.user_from_username`` makes for a new user
  (auth/handlers.py's ``new_orm_user`` makes the same in one commit, for a launch's
  first login) and ``jupyterhub.metrics.TOTAL_USERS``, which it counts.
- ltiauthenticator: ``LTI13CallbackHandler._get_nonce_state_cookie`` (auth/handlers.py:
  the nonce's state, whose epoch says which hub process made it; auth/replay.py).
- JupyterHub: ``BaseHandler._set_cookie`` (auth/handlers.py, the login's state and nonce
  cookies with SameSite=None; Secure under https), as ltiauthenticator sets them; and
  upstream's ``generate_state`` setting its cookie through the public
  ``set_state_cookie``, which ours overrides.
"""

import inspect
import re
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def fail_message(upstream: str, name: str, user: str) -> str:
    return (
        f"{upstream} {version(upstream)} changed {name}, which {user} relies on: keep the "
        "upper bound in pyproject.toml, or port that code to the new release."
    )


def test_systemdspawner_internals():
    from systemdspawner import SystemdSpawner, systemd

    where = "ananke_hub/spawner.py"
    upstream = "jupyterhub-systemdspawner"
    assert isinstance(getattr(systemd, "RUN_ROOT", None), str), fail_message(
        upstream, "systemd.RUN_ROOT", where
    )
    expand = getattr(SystemdSpawner, "_expand_user_vars", None)
    assert callable(expand) and list(inspect.signature(expand).parameters) == [
        "self",
        "string",
    ], fail_message(upstream, "SystemdSpawner._expand_user_vars(string)", where)
    # What we use it for: {USERNAME} in unit names and User=.
    spawner = SystemdSpawner.__new__(SystemdSpawner)
    spawner.user = type("User", (), {"name": "u7", "id": 7})()
    assert expand(spawner, "jupyter-{USERNAME}") == "jupyter-u7", fail_message(
        upstream, "SystemdSpawner._expand_user_vars", where
    )


def test_nbgrader_exchange_internals():
    from nbgrader.exchange.default import ExchangeCollect

    where = "ananke_hub/lab/exchange.py (ExchangeCollect.init_src)"
    collect = ExchangeCollect.__new__(ExchangeCollect)
    try:
        record = collect._path_to_record("/x/inbound/u1+ps1+2026-01-02 03:04:05.000000 UTC+ab")
        older = collect._path_to_record("/x/inbound/u1+ps1+2025-01-02 03:04:05.000000 UTC+cd")
        newest_first = collect._sort_by_timestamp([older, record])
    except AttributeError as exc:
        raise AssertionError(fail_message("nbgrader", str(exc), where)) from exc
    assert record["username"] == "u1" and isinstance(record["timestamp"], datetime), fail_message(
        "nbgrader", "ExchangeCollect._path_to_record", where
    )
    assert newest_first == [record, older], fail_message(
        "nbgrader", "ExchangeCollect._sort_by_timestamp", where
    )


def test_jupyterhub_internals():
    from jupyterhub.apihandlers.auth import OAuthAuthorizeHandler
    from jupyterhub.app import JupyterHub
    from jupyterhub.services.auth import HubOAuth

    # The set the hub fills from services' oauth_no_confirm and reads at authorization.
    assert "oauth_no_confirm_list" in inspect.getsource(JupyterHub.init_tornado_settings), (
        fail_message("jupyterhub", "the tornado setting oauth_no_confirm_list", "trust_graders")
    )
    assert "oauth_no_confirm_list" in inspect.getsource(OAuthAuthorizeHandler), fail_message(
        "jupyterhub", "the tornado setting oauth_no_confirm_list", "trust_graders"
    )
    # Kore's ?token= cookie: public HubOAuth API only.
    for name in ("allow_token_in_url", "user_for_token", "get_session_id", "set_cookie"):
        assert hasattr(HubOAuth, name), fail_message("jupyterhub", f"HubOAuth.{name}", "kore")


def test_no_private_name_of_hub_auth_is_used():
    """HubAuth's and HubOAuth's private names stay out of our code (kore/handlers/base.py
    used ``_persist_url_token_if_set``)."""
    private = re.compile(r"hub_auth\._[a-z]\w*")
    used = {
        f"{path.relative_to(REPO)}: {match}"
        for package in ("ananke_hub", "kore")
        for path in (REPO / package).rglob("*.py")
        for match in private.findall(path.read_text())
    }
    assert not used, used


def test_ltiauthenticator_internals():
    from ltiauthenticator.lti13 import handlers

    where = "ananke_hub/auth/handlers.py (the nonce's epoch)"
    getter = getattr(handlers.LTI13CallbackHandler, "_get_nonce_state_cookie", None)
    assert callable(getter) and list(inspect.signature(getter).parameters) == ["self"], (
        fail_message("jupyterhub-ltiauthenticator", "_get_nonce_state_cookie", where)
    )
    # The callback compares the token's nonce with the hash of exactly this state.
    source = inspect.getsource(handlers.LTI13CallbackHandler.check_nonce)
    assert "self._get_nonce_state_cookie()" in source and "get_nonce(" in source, fail_message(
        "jupyterhub-ltiauthenticator", "LTI13CallbackHandler.check_nonce", where
    )


def test_login_cookie_internals():
    from jupyterhub.handlers import BaseHandler
    from ltiauthenticator.lti13 import handlers

    where = "ananke_hub/auth/handlers.py (AnankeLoginInitHandler's login cookies)"
    setter = getattr(BaseHandler, "_set_cookie", None)
    params = list(inspect.signature(setter).parameters) if callable(setter) else []
    assert params[:3] == ["self", "key", "value"] and "overrides" in params, fail_message(
        "jupyterhub", "BaseHandler._set_cookie(key, value, encrypted, **overrides)", where
    )
    source = inspect.getsource(handlers.LTI13LoginInitHandler.generate_state)
    assert "self.set_state_cookie(" in source, fail_message(
        "jupyterhub-ltiauthenticator", "LTI13LoginInitHandler.generate_state", where
    )


def test_a_new_hub_user_has_the_rows_jupyterhubs_user_from_username_makes(tmp_path):
    """auth/handlers.py's ``new_orm_user`` makes a launch's new hub user in one commit
    instead of JupyterHub's two: the rows must be the ones the installed JupyterHub's
    ``BaseHandler.user_from_username`` makes (user, roles, groups, spawners), or a
    release that makes more (or other) has to be followed there."""
    from types import SimpleNamespace

    from jupyterhub import orm
    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.roles import create_role, get_default_roles
    from jupyterhub.user import UserDict
    from sqlalchemy import inspect as sa_inspect

    from ananke_hub.auth.handlers import new_orm_user

    db = orm.new_session_factory(f"sqlite:///{tmp_path / 'hub.sqlite'}")()
    for role in get_default_roles():  # as JupyterHub makes them at start
        create_role(db, role)
    handler = BaseHandler.__new__(BaseHandler)
    handler.application = SimpleNamespace(settings={"db": db, "users": UserDict(lambda: db, {})})
    handler.user_from_username("upstream")  # JupyterHub's own
    ours = new_orm_user(db, "ours")
    db.commit()

    def rows(name):
        db.expire_all()
        user = orm.User.find(db, name)
        columns = {
            attr.key: getattr(user, attr.key)
            for attr in sa_inspect(orm.User).column_attrs
            if attr.key not in {"id", "name", "created", "last_activity", "cookie_id"}
        }
        spawners = [
            {
                attr.key: getattr(spawner, attr.key)
                for attr in sa_inspect(orm.Spawner).column_attrs
                if attr.key not in {"id", "user_id", "started", "last_activity"}
            }
            for spawner in user.orm_spawners.values()
        ]
        return {
            "columns": columns,
            "roles": sorted(r.name for r in user.roles),
            "groups": sorted(g.name for g in user.groups),
            "spawners": spawners,
            "api_tokens": len(user.api_tokens),
            "oauth_codes": len(getattr(user, "oauth_codes", [])),
        }

    assert rows("ours") == rows("upstream")
    assert rows("ours")["roles"] == ["user"] and len(rows("ours")["spawners"]) == 1
    assert ours.name == "ours"
