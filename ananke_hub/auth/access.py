"""Access follows the course registry: the hub's side of taking a course away from someone.

Staff reach a course's grader server (``/user/grader-<course>/``) through the managed
role ``staff-<course>`` (leaf scopes ``access:servers!server=grader-<course>/``; see
:func:`ananke_hub.courses.provision.staff_role`). JupyterHub 6 has no REST API for
roles: a managed role changes only when the authenticator returns a user's roles, at a
login or in ``Authenticator.refresh_user``, which JupyterHub calls on the user's own
requests once ``auth_refresh_age`` has passed. That is too late for someone the LMS
removed from a course: they may never log in again, and their open formgrader keeps
working meanwhile.

So Kore, after a roster sync changed the registry (or while it deletes a course), asks
the hub to apply the registry now: ``POST /hub/api/ananke/users/<name>/access`` (scope
``admin:users``, which only Kore's role holds besides hub admins). The hub then does what
a refresh does (:meth:`AnankeLTI13Authenticator.refresh_user`: the user's groups and
roles computed from the registry, applied through JupyterHub's managed groups and roles)
and deletes the user's OAuth tokens issued for grader servers of courses they no
longer teach: the grader server's login cookie holds such a token and stops working
at its next check with the hub (``--HubOAuth.cache_max_age``, see
:mod:`ananke_hub.spawner`). The request carries no identity: who the user is comes
from the URL only as the object acted on, and the result is computed from the
registry, so a caller can at most make the hub apply the truth early.
"""

import json

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from ..courses.provision import course_of_grader_client

#: The route, under the hub's prefix (``/hub/``). JupyterHub's own API is ``api/...``;
#: ``api/ananke/`` is ours.
ACCESS_ROUTE = r"/api/ananke/users/([^/]+)/access"


def revoke_grader_tokens(db, user, staff_courses: frozenset[str]) -> int:
    """Delete ``user``'s tokens issued to grader servers of courses not in ``staff_courses``.

    These are the OAuth tokens a grader server's login cookie holds (one per login to
    it). JupyterHub's own ``DELETE /hub/api/users/<name>/tokens/<id>`` deletes a
    token the same way (``db.delete``); doing it here spares Kore the ``tokens`` scope,
    with which it could read and create every user's tokens.
    """
    revoked = 0
    for token in list(user.orm_user.api_tokens):
        course_id = course_of_grader_client(token.client_id)
        if course_id is not None and course_id not in staff_courses:
            db.delete(token)
            revoked += 1
    if revoked:
        db.commit()
    return revoked


class AccessHandler(APIHandler):
    """``POST``: apply the registry's groups and roles to one user now; revoke tokens."""

    @needs_scope("admin:users")
    async def post(self, user_name):
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"No such user: {user_name}")
        authenticator = self.authenticator
        apply = getattr(authenticator, "apply_course_access", None)
        if apply is None or not getattr(authenticator, "provision_courses", False):
            raise web.HTTPError(
                409, "This hub does not provision courses (provision_courses is False)."
            )
        result = await apply(self, user)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(result))
