"""Ananke's LTI 1.3 authenticator: ltiauthenticator's login flow, hardened and configured
from the one LMS registration in ``30_lms.py``."""

import dataclasses

from jupyterhub.utils import maybe_future
from ltiauthenticator.lti13.auth import LTI13Authenticator
from ltiauthenticator.lti13.constants import LTI13_CUSTOM_CLAIM
from ltiauthenticator.lti13.error import InvalidAudienceError, LoginError, TokenError
from ltiauthenticator.lti13.validator import LTI13LaunchValidator
from sqlalchemy.exc import SQLAlchemyError
from tornado.web import HTTPError
from traitlets import Bool, Float, Instance, Integer, TraitError, Unicode, default, validate

from ..courses.deeplink import (
    LINK_PARAMETER,
    DeepLinkingSettings,
    DeepLinkStore,
    check_deep_linking_request,
    is_deep_linking_request,
)
from ..courses.identity import LaunchError, LaunchInfo, check_course_launch, kept_claims
from ..courses.layout import course_of_grader
from ..courses.provision import (
    CourseProvisioner,
    Entitlements,
    ProvisioningError,
)
from ..courses.schema import SchemaOutOfDate, SchemaTooNew
from ..lti_spec import DEPLOYMENT_ID
from ..registration import LMSRegistration
from ..registrations import REMOVED, Registration, RegistrationBook, RegistrationStore
from ..usernames import UsernameRule, check_prefix, hub_username
from .access import ACCESS_ROUTE, AccessHandler, revoke_grader_tokens
from .dynreg import ROUTE as DYNREG_ROUTE
from .dynreg import DynamicRegistrationHandler
from .handlers import AnankeCallbackHandler, AnankeLoginInitHandler, LaunchRefused
from .platform_keys import PlatformKeySet
from .replay import NonceRegistry


class AnankeLTI13Authenticator(LTI13Authenticator):
    """LTI 1.3 login for a teaching hub (short name ``ananke-lti13``)."""

    login_handler = AnankeLoginInitHandler
    callback_handler = AnankeCallbackHandler

    registration = Instance(
        LMSRegistration,
        help="The LMS registration, configured as c.LMSRegistration in 30_lms.py.",
    )

    @default("registration")
    def _default_registration(self):
        return LMSRegistration(parent=self)

    provision_courses = Bool(
        True,
        config=True,
        help="""Make every launched LMS activity an nbgrader course (created at its first
        launch), with groups and roles for its people. False makes the hub a plain LTI
        login: no courses, and the hub's groups and roles are left alone.""",
    )

    provisioner = Instance(
        CourseProvisioner,
        help="Creates the launch's course and returns the user's groups and roles.",
    )

    @default("provisioner")
    def _default_provisioner(self):
        return CourseProvisioner(parent=self)

    # The upstream settings default to the registration, so 30_lms.py is the one place
    # to set them; setting them on the authenticator still works and wins.
    @default("issuer")
    def _default_issuer(self):
        return self.registration.issuer

    @default("client_id")
    def _default_client_id(self):
        return set(self.registration.client_ids)

    @default("authorize_url")
    def _default_authorize_url(self):
        return self.registration.authorize_url

    @default("jwks_endpoint")
    def _default_jwks_endpoint(self):
        return self.registration.jwks_url

    @default("username_key")
    def _default_username_key(self):
        # Moodle's `sub` is the numeric user id; emails change and are not always sent.
        return "sub"

    username_prefix = Unicode(
        "u",
        config=True,
        help="""Prefix of every username: `u` + the LMS user id (`sub`), so Moodle's user 123
        is `u123`. Ids with upper case letters are escaped (`CaseX` is `_u_case_x`), ids
        that would not make a valid system user name (over 31 characters, or characters
        other than letters, digits, `_` and `-`) become the prefix plus a hash: distinct
        LMS users always get distinct names (see docs/admin/lms.md). At most 8 characters:
        a lower-case letter, then lower-case letters, digits, `_` or `-`; or empty.""",
    )

    @validate("username_prefix")
    def _valid_username_prefix(self, proposal):
        try:
            return check_prefix(proposal.value)
        except ValueError as exc:
            raise TraitError(str(exc)) from None

    @property
    def username_rule(self) -> UsernameRule:
        """The naming rule, shared with Kore's roster sync (UsernameRule.from_config);
        ``for_registration`` gives a further platform's rule."""
        return UsernameRule(
            prefix=self.username_prefix,
            key=self.username_key or "sub",
            username_map=dict(self.username_map),
        )

    registrations_max_age = Float(
        5,
        config=True,
        help="""Seconds the hub keeps its list of LMS registrations (those made by pasting
        a registration URL, in the database) before reading it again. A registration made,
        disabled or removed counts for launches after at most this long, without a restart.""",
    )

    platform_keys_max_age = Float(
        3600,
        config=True,
        help="""Seconds the platform's public keyset is cached before it is fetched again.
        A token signed with an unknown key id triggers a fetch at once.""",
    )

    platform_keys_timeout = Float(
        10,
        config=True,
        help="Seconds to wait for the platform's keyset before the launch fails.",
    )

    max_request_body = Integer(
        256 * 1024,
        config=True,
        help="""Largest body, in bytes, of a request to the login routes
        (/hub/lti13/oauth_login, /hub/lti13/oauth_callback). Anyone may post there
        without a cookie; an LMS's form post is a few KB. A larger request is refused
        with 413 before its body is read.""",
    )

    max_id_token_bytes = Integer(
        64 * 1024,
        config=True,
        help="""Largest id_token, in bytes, a launch may carry; a larger one is refused
        with 413 before it is decoded. Moodle's are 2-5 KB; raise it only for an LMS
        that sends very large custom parameters.""",
    )

    @validate("max_request_body", "max_id_token_bytes")
    def _positive_size(self, proposal):
        if proposal.value < 1024:
            raise TraitError(
                f"AnankeLTI13Authenticator.{proposal.trait.name} must be at least 1024 "
                f"bytes, not {proposal.value}."
            )
        return proposal.value

    @default("allow_all")
    def _default_allow_all(self):
        # The LMS decides who may launch: a valid, signed launch admits its user, unless
        # the admin configured an allow list.
        return not (self.allowed_users or getattr(self, "allowed_groups", None))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._platform_keys = {}
        self._nonces = None
        self._registrations = None
        missing = self.registration.missing()
        if missing and not (self.issuer and self.client_id and self.jwks_endpoint):
            self.log.warning(
                "lti: LMS registration incomplete (%s): launches will fail until "
                "c.LMSRegistration is filled in 30_lms.py.",
                ", ".join(missing),
            )
        if not self.registration.deployment_ids:
            self.log.warning(
                "lti: c.LMSRegistration.deployment_ids is empty: any deployment of "
                "client id(s) %s may launch.",
                ", ".join(sorted(self.client_id)) or "(none)",
            )

    def get_handlers(self, app):
        # Called once, when the hub starts: the moment to prepare for course launches.
        # The registry's database (courses, and the used nonces of every launch) at
        # another schema stops the hub with what to do (`ananke upgrade-db`).
        try:
            self.provisioner.registry.check_schema()
        except (SchemaOutOfDate, SchemaTooNew) as exc:
            self.log.critical("%s", exc)
            raise SystemExit(str(exc)) from exc
        except SQLAlchemyError as exc:  # down now: each launch tries again, as before
            self.log.warning("courses: the course registry is not reachable: %s", exc)
        if self.provision_courses:
            self.provisioner.prepare()
        # Kore asks the hub to apply a course's changed staff at once (see access.py).
        return [
            *super().get_handlers(app),
            (ACCESS_ROUTE, AccessHandler),
            # An LMS registers itself by a registration URL (LTI Dynamic Registration).
            (DYNREG_ROUTE, DynamicRegistrationHandler),
        ]

    @property
    def platform_keys(self) -> PlatformKeySet:
        """The key set of the registration in 30_lms.py."""
        return self.keys_at(self.jwks_endpoint)

    def keys_at(self, url: str) -> PlatformKeySet:
        """The cached key set at ``url``: one per platform."""
        keys = self._platform_keys.get(url)
        if keys is None:
            keys = self._platform_keys[url] = PlatformKeySet(
                url,
                max_age=self.platform_keys_max_age,
                timeout=self.platform_keys_timeout,
                log=self.log,
            )
        return keys

    @property
    def registrations(self) -> RegistrationBook:
        """Every registration: 30_lms.py's and the database's (see registrations.py)."""
        if self._registrations is None:
            store = RegistrationStore(
                self.provisioner.registry, self.config_entry_source(), self.username_prefix
            )
            self._registrations = RegistrationBook(store, max_age=self.registrations_max_age)
        return self._registrations

    def config_entry_source(self) -> LMSRegistration:
        # Settings made on the authenticator itself (issuer, client_id, ...) win, as
        # for a launch before several registrations existed.
        reg = LMSRegistration(parent=self)
        reg.issuer = self.issuer
        reg.client_id = sorted(self.client_id)
        reg.deployment_ids = list(self.registration.deployment_ids)
        reg.authorize_url = self.authorize_url or ""
        reg.jwks_url = self.jwks_endpoint or ""
        reg.access_token_url = self.registration.access_token_url
        reg.token_audience = self.registration.token_audience
        return reg

    async def registration_of_login(self, args: dict) -> tuple[Registration, str]:
        """The enabled registration a login initiation comes from, and its client id."""
        reg = await self.registrations.find(args.get("iss", ""), args.get("client_id") or None)
        self.refuse_unusable(reg, args.get("iss", ""), args.get("client_id"))
        return reg, self.check_login_initiation(args, reg)

    async def registration_of_token(self, issuer: str, audience) -> Registration:
        """The enabled registration an id_token names by its ``iss`` and ``aud``."""
        candidates = [audience] if isinstance(audience, str) else list(audience or [])
        reg = None
        for client_id in candidates:
            reg = await self.registrations.find(issuer, client_id)
            if reg is not None:
                break
        if reg is None:
            # As jwt.decode says it, before any key is fetched for a token nobody registered.
            if self.registrations.knows_issuer(issuer):
                raise InvalidAudienceError(
                    f"Invalid audience {audience!r}: the id_token is not for this tool"
                )
            raise TokenError(
                f"id_token rejected: Invalid issuer {issuer!r}, not an LMS this hub is "
                "registered with"
            )
        self.refuse_unusable(reg, issuer, ", ".join(map(str, candidates)))
        return reg

    def refuse_unusable(self, reg: Registration | None, issuer: str, client_id) -> None:
        if reg is None:
            if client_id and self.registrations.knows_issuer(issuer):
                raise LaunchRefused(f"client_id {client_id!r} is not registered with this hub")
            raise LaunchRefused(f"issuer {issuer!r} is not the LMS this hub is registered with")
        if reg.state == REMOVED:
            raise LaunchRefused(
                f"the registration of the LMS {issuer!r} was removed from this hub, so it "
                "cannot open labs any more. Courses and files made from it are kept; ask the "
                "hub's administrators to register this LMS again if it should."
            )
        if not reg.enabled:
            raise LaunchRefused(
                f"the registration of the LMS {issuer!r} is disabled on this hub. Ask the "
                "hub's administrators to enable it (`ananke lms enable`)."
            )

    @property
    def nonces(self) -> NonceRegistry:
        if self._nonces is None:
            validator = LTI13LaunchValidator(parent=self)
            # In memory: a nonce made before a restart is refused (replay.py).
            self._nonces = NonceRegistry(ttl=validator.max_age + 2 * validator.time_leeway + 60)
        return self._nonces

    def check_login_initiation(self, args: dict, reg: Registration | None = None) -> str:
        """Check a login initiation request against ``reg`` (default: 30_lms.py's);
        return the client id to use."""
        issuer = reg.issuer if reg is not None else self.issuer
        client_ids = set(reg.client_ids) if reg is not None else self.client_id
        if args["iss"] != issuer:
            raise LaunchRefused(
                f"issuer {args['iss']!r} is not the LMS this hub is registered with"
            )
        client_id = args.get("client_id")
        if not client_id:
            if len(client_ids) != 1:
                raise LaunchRefused("the LMS sent no client_id and several are configured")
            (client_id,) = client_ids
        if client_id not in client_ids:
            raise LaunchRefused(f"client_id {client_id!r} is not registered with this hub")
        deployment_id = args.get("lti_deployment_id")
        if deployment_id and not self.deployment_allowed(deployment_id, reg):
            raise LaunchRefused(f"deployment {deployment_id!r} is not allowed on this hub")
        return client_id

    def deployment_allowed(self, deployment_id: str, reg: Registration | None = None) -> bool:
        if reg is not None:
            return reg.deployment_allowed(deployment_id)
        allowed = self.registration.deployment_ids
        return not allowed or deployment_id in allowed

    def check_deployment(self, id_token: dict, reg: Registration | None = None) -> None:
        deployment_id = id_token.get(DEPLOYMENT_ID)
        if not isinstance(deployment_id, str) or not self.deployment_allowed(deployment_id, reg):
            where = (
                "(c.LMSRegistration.deployment_ids in 30_lms.py)"
                if reg is None or reg.id == "config"
                else f"(registration {reg.id}, `ananke lms list`)"
            )
            raise LaunchRefused(f"deployment {deployment_id!r} is not allowed on this hub {where}")

    def get_username(self, token: dict) -> str:
        """``username_prefix`` + the claim named by ``username_key`` (default ``sub``)."""
        key = self.username_rule.key
        source = token
        if key.startswith("custom_"):
            source = token.get(LTI13_CUSTOM_CLAIM) or {}
            key = key[len("custom_") :]
        value = source.get(key) if isinstance(source, dict) else None
        if not value:
            value = token.get("sub")
        if not isinstance(value, str | int) or value == "":
            raise LoginError(
                "the launch carries no user id (no `sub` claim): anonymous launches "
                "cannot open a lab"
            )
        return self.username_from(str(value), self.prefix_of_token(token))

    def prefix_of_token(self, token: dict) -> str:
        """The username prefix of the registration the (validated) token came from."""
        issuer = token.get("iss")
        if not issuer or self._registrations is None:
            return self.username_prefix
        audience = token.get("aud")
        for client_id in [audience] if isinstance(audience, str) else list(audience or []):
            reg = self.registrations.cached(issuer, client_id)
            if reg is not None:
                return reg.username_prefix
        return self.username_prefix

    def username_from(self, value: str, prefix: str | None = None) -> str:
        # The same rule as Kore's roster sync (NRPS), which enrols people before they launch
        # (UsernameRule.for_prefix per registration); JupyterHub then applies
        # normalize_username (UsernameRule.normalize).
        rule = self.username_rule if prefix is None else self.username_rule.for_prefix(prefix)
        return hub_username(value, rule.prefix)

    async def run_post_auth_hook(self, handler, auth_model):
        """After the allow/block checks, before the user is stored: provision the course.

        Runs the admin's own post_auth_hook first. A launch that names no activity, or
        whose course cannot be set up, is refused; nothing of a half-made course stays
        unfinished, since the next launch completes it.
        """
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        if not self.provision_courses:
            return auth_model
        token = auth_model.get("auth_state") or {}
        try:
            if is_deep_linking_request(token):
                # An instructor's content selection (checked in the callback already):
                # it logs them in and changes none of their courses, groups or roles.
                check_deep_linking_request(token)
                auth_model["groups"] = auth_model["roles"] = None
                return auth_model
            # Only an activity launch by a member of its course creates anything.
            check_course_launch(token)
            info = LaunchInfo.from_id_token(token, auth_model["name"])
            if LINK_PARAMETER in info.custom:
                info = await self.linked_launch(info)
        except LaunchError as exc:
            raise HTTPError(exc.status, f"LTI launch refused: {exc}") from None
        try:
            entitlements = await self.provisioner.provision(
                handler, info, meanwhile=lambda: self.create_hub_user(handler, info.username)
            )
        except ProvisioningError as exc:
            raise HTTPError(503, str(exc)) from None
        # JupyterHub replaces the user's groups and roles with these (manage_groups,
        # manage_roles): they cover all the user's courses, not only this one. The
        # callback handler trims them to what the user lacks (settle_access).
        auth_model["groups"] = entitlements.groups
        auth_model["roles"] = entitlements.roles
        return auth_model

    async def create_hub_user(self, handler, name: str) -> None:
        """A new user's hub account, made as JupyterHub's ``auth_to_user`` would make it
        next (``user_from_username``, then ``add_user``), while the launch's registry
        work runs in the registry's thread: the hub database's commits wait for the disk
        with the GIL released, so the registry's trip adds nothing to a first login's
        time. A launch refused after this (the course is being deleted, the registry is
        down) leaves the account without groups and not logged in, like an account
        Kore's roster sync made before its person's first launch."""
        ahead = getattr(handler, "hub_user_ahead", None)
        if ahead is not None:  # our callback handler: it keeps the user for auth_to_user
            await ahead(name)
        elif handler.find_user(name) is None:
            await maybe_future(self.add_user(handler.user_from_username(name)))

    def settle_access(self, user, auth_model: dict) -> None:
        """Before JupyterHub applies a launch's auth model to ``user`` (None: a new
        user): keep the hub admin's admin role, and leave out the groups or roles the
        user holds already.

        The managed roles replace all of the user's roles: a hub admin's ``admin`` role
        is kept (JupyterHub grants it from admin_users just before applying these).
        JupyterHub's ``sync_roles`` rewrites every role it is given (and commits) even
        when nothing changed, and ``sync_groups`` commits a change: None for what the
        user has already leaves it as it is. A new user gets the default ``user`` role
        (and ``admin`` if admin) from JupyterHub itself.
        """
        if auth_model.get("roles") is None:  # not a provisioned launch (Deep Linking)
            return
        admin = auth_model.get("admin")
        if admin is None:  # admin_users says nothing: the user's current state stands
            admin = user is not None and user.admin
        roles = auth_model["roles"]
        if admin:
            roles.append({"name": "admin"})
        if user is None:
            if sorted(r["name"] for r in roles) == sorted(
                ["user", "admin"] if admin else ["user"]
            ) and all("scopes" not in r for r in roles):
                auth_model["roles"] = None
            return
        if {g.name for g in user.groups} == set(auth_model["groups"]):
            auth_model["groups"] = None
        if user.admin == bool(admin) and self._holds_roles(user, roles):
            auth_model["roles"] = None

    async def linked_launch(self, info: LaunchInfo) -> LaunchInfo:
        """A launch of an activity placed by Deep Linking opens the course Kore placed
        it for (courses/deeplink.py), not a new one; a parameter Kore did not issue for
        this LMS course is refused."""
        store = DeepLinkStore(self.provisioner.registry)
        try:
            link = await self.provisioner.registry.run(
                store.resolve, info.custom[LINK_PARAMETER], info
            )
        except SQLAlchemyError:
            self.log.exception("lti: cannot look up a placed activity in the course registry")
            raise HTTPError(
                503, "The hub cannot open this activity right now. Launch again in a minute."
            ) from None
        self.log.info(
            "course:%s user:%s launch of placed activity %s (assignment %s)",
            link.course_id,
            info.username,
            info.resource_link_id[:40],
            link.assignment,
        )
        return dataclasses.replace(
            info, course_id=link.course_id, linked_assignment=link.assignment
        )

    async def record_deep_linking(
        self, username: str, token: dict, settings: DeepLinkingSettings
    ) -> tuple[str, str]:
        """Keep an instructor's validated content selection for Kore's picker page:
        the request's id and the single-use ticket that opens it."""
        store = DeepLinkStore(self.provisioner.registry)
        try:
            return await self.provisioner.registry.run(
                store.record_request, username, token, settings
            )
        except SQLAlchemyError:
            self.log.exception("lti: cannot record a content selection in the course registry")
            raise HTTPError(
                503, "The hub cannot answer this request right now. Try again in a minute."
            ) from None

    @staticmethod
    def _holds_roles(user, roles: list[dict]) -> bool:
        """Whether ``user`` has exactly ``roles`` (names, and scopes and descriptions
        of the managed ones)."""
        have = {role.name: role for role in user.roles}
        if set(have) != {role["name"] for role in roles}:
            return False
        return all(
            sorted(have[role["name"]].scopes) == sorted(role["scopes"])
            and have[role["name"]].description == role.get("description")
            for role in roles
            if "scopes" in role
        )

    @staticmethod
    def _access_model(user, granted: Entitlements) -> dict | None:
        """The auth model that gives ``user`` what the registry says; None if they have it.

        Roles as at a launch: ``user``, one ``staff-<course>`` per course they teach,
        and ``admin`` kept for hub admins (managed roles replace all of a user's roles).
        """
        roles = list(granted.roles)
        if user.admin:
            roles.append({"name": "admin"})
        have_roles = {role.name for role in user.roles}
        have_groups = {group.name for group in user.groups}
        if have_roles == {r["name"] for r in roles} and have_groups == set(granted.groups):
            return None
        return {"name": user.name, "groups": list(granted.groups), "roles": roles}

    async def refresh_user(self, user, handler=None):
        """Groups and roles from the course registry, as a launch would give them.

        JupyterHub calls this on a user's requests once ``auth_refresh_age`` passed
        (and applies the returned groups and roles: manage_groups, manage_roles), so a
        change in the registry reaches every user even without Kore's push
        (:mod:`ananke_hub.auth.access`). Grader accounts have no course roles.
        """
        if not self.provision_courses or course_of_grader(user.name) is not None:
            return True
        granted = await self.provisioner.entitlements_of(user.name)
        # Tokens are not deleted here: this may run inside a request made with one of
        # them. Without the role, the hub no longer grants them the grader server.
        return self._access_model(user, granted) or True

    async def apply_course_access(self, handler, user) -> dict:
        """Apply the registry to ``user`` now (Kore's request, see access.py)."""
        if course_of_grader(user.name) is not None:
            return {"name": user.name, "changed": False, "revoked_tokens": 0}
        granted = await self.provisioner.entitlements_of(user.name)
        model = self._access_model(user, granted)
        if model is not None:
            # What JupyterHub does with a refresh_user result; auth_state stays.
            model["auth_state"] = await user.get_auth_state()
            await handler.auth_to_user(model, user)
        revoked = revoke_grader_tokens(handler.db, user, granted.staff_courses)
        if model is not None or revoked:
            self.log.info(
                "user:%s course access applied: groups %s, %d grader token(s) revoked",
                user.name,
                ", ".join(granted.groups) or "none",
                revoked,
            )
        return {
            "name": user.name,
            "changed": model is not None,
            "groups": list(granted.groups),
            "roles": sorted(role.name for role in user.roles),
            "revoked_tokens": revoked,
        }

    async def pre_spawn_start(self, user, spawner):
        """Before any lab starts (JupyterHub calls this in every spawn, before
        ``Spawner.start``): the user is in the gradebook of every course they launched
        as a learner, and those courses are set up (a grader account's lab: its course).
        A launch enrols them after its login answered (it is not on the login's critical
        path); this waits for that, or does it after a hub restart."""
        await maybe_future(super().pre_spawn_start(user, spawner))
        if not self.provision_courses:
            return
        course_id = course_of_grader(user.name)
        if course_id is not None:
            # The formgrader's lab: its course's files (a learner's first launch of a new
            # course does not wait for them).
            try:
                await self.provisioner.ensure_course_ready(course_id)
            except Exception as exc:
                self.log.exception("course:%s set-up before the grader's lab failed", course_id)
                raise HTTPError(
                    503,
                    "The course's files on the hub are not ready: setting them up failed. "
                    "Try again in a minute; if it keeps failing, tell the hub's administrators.",
                ) from exc
            return
        try:
            await self.provisioner.ensure_enrolled(user.name)
        except ProvisioningError as exc:
            raise HTTPError(503, str(exc)) from None

    async def authenticate(self, handler, data=None):
        if not data:
            return None
        # auth_state is what Ananke reads of the validated id_token (roles, context,
        # resource link, AGS and NRPS endpoints), not the whole token: see
        # identity.KEPT_CLAIMS. JupyterHub stores it encrypted (enable_auth_state).
        return {"name": self.get_username(data), "auth_state": kept_claims(data)}
