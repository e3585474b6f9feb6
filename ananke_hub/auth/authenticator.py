"""Ananke's LTI 1.3 authenticator: ltiauthenticator's login flow, hardened and configured
from the one LMS registration in ``30_lms.py``."""

from ltiauthenticator.lti13.auth import LTI13Authenticator
from ltiauthenticator.lti13.constants import LTI13_CUSTOM_CLAIM
from ltiauthenticator.lti13.error import LoginError
from ltiauthenticator.lti13.validator import LTI13LaunchValidator
from tornado.web import HTTPError
from traitlets import Bool, Float, Instance, Integer, TraitError, Unicode, default, validate

from ..courses.identity import LaunchError, LaunchInfo, kept_claims
from ..courses.provision import CourseProvisioner, ProvisioningError
from ..lti_spec import DEPLOYMENT_ID
from ..registration import LMSRegistration
from ..usernames import hub_username
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
        is `u123`. A value that would not make a valid system user name (over 31 characters,
        or characters other than letters, digits, `_` and `-`) becomes the prefix plus a hash.""",
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
        self._platform_keys = None
        self._nonces = None
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
        if self.provision_courses:
            self.provisioner.prepare()
        return super().get_handlers(app)

    @property
    def platform_keys(self) -> PlatformKeySet:
        if self._platform_keys is None or self._platform_keys.url != self.jwks_endpoint:
            self._platform_keys = PlatformKeySet(
                self.jwks_endpoint,
                max_age=self.platform_keys_max_age,
                timeout=self.platform_keys_timeout,
                log=self.log,
            )
        return self._platform_keys

    @property
    def nonces(self) -> NonceRegistry:
        if self._nonces is None:
            validator = LTI13LaunchValidator(parent=self)
            self._nonces = NonceRegistry(ttl=validator.max_age + 2 * validator.time_leeway + 60)
        return self._nonces

    def check_login_initiation(self, args: dict) -> str:
        """Check a login initiation request; return the client id to use."""
        if args["iss"] != self.issuer:
            raise LaunchRefused(
                f"issuer {args['iss']!r} is not the LMS this hub is registered with"
            )
        client_id = args.get("client_id")
        if not client_id:
            if len(self.client_id) != 1:
                raise LaunchRefused("the LMS sent no client_id and several are configured")
            (client_id,) = self.client_id
        if client_id not in self.client_id:
            raise LaunchRefused(f"client_id {client_id!r} is not registered with this hub")
        deployment_id = args.get("lti_deployment_id")
        if deployment_id and not self.deployment_allowed(deployment_id):
            raise LaunchRefused(f"deployment {deployment_id!r} is not allowed on this hub")
        return client_id

    def deployment_allowed(self, deployment_id: str) -> bool:
        allowed = self.registration.deployment_ids
        return not allowed or deployment_id in allowed

    def check_deployment(self, id_token: dict) -> None:
        deployment_id = id_token.get(DEPLOYMENT_ID)
        if not isinstance(deployment_id, str) or not self.deployment_allowed(deployment_id):
            raise LaunchRefused(
                f"deployment {deployment_id!r} is not allowed on this hub "
                "(c.LMSRegistration.deployment_ids in 30_lms.py)"
            )

    def get_username(self, token: dict) -> str:
        """``username_prefix`` + the claim named by ``username_key`` (default ``sub``)."""
        key = self.username_key or "sub"
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
        return self.username_from(str(value))

    def username_from(self, value: str) -> str:
        # The same rule as Kore's roster sync (NRPS), which enrols people before they launch.
        return hub_username(value, self.username_prefix)

    async def run_post_auth_hook(self, handler, auth_model):
        """After the allow/block checks, before the user is stored: provision the course.

        Runs the admin's own post_auth_hook first. A launch that names no activity, or
        whose course cannot be set up, is refused; nothing of a half-made course stays
        unfinished, since the next launch completes it.
        """
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        if not self.provision_courses:
            return auth_model
        try:
            info = LaunchInfo.from_id_token(auth_model.get("auth_state") or {}, auth_model["name"])
        except LaunchError as exc:
            raise HTTPError(400, f"LTI launch refused: {exc}") from None
        try:
            entitlements = await self.provisioner.provision(handler, info)
        except ProvisioningError as exc:
            raise HTTPError(503, str(exc)) from None
        # JupyterHub replaces the user's groups and roles with these (manage_groups,
        # manage_roles): they cover all the user's courses, not only this one.
        auth_model["groups"] = entitlements.groups
        auth_model["roles"] = entitlements.roles
        # The managed roles replace all of the user's roles: keep a hub admin's admin
        # role (JupyterHub grants it from admin_users just before applying these).
        admin = auth_model.get("admin")
        if admin is None:  # admin_users says nothing: the user's current state stands
            existing = handler.find_user(auth_model["name"])
            admin = existing is not None and existing.admin
        if admin:
            auth_model["roles"].append({"name": "admin"})
        return auth_model

    async def authenticate(self, handler, data=None):
        if not data:
            return None
        # auth_state is what Ananke reads of the validated id_token (roles, context,
        # resource link, AGS and NRPS endpoints), not the whole token: see
        # identity.KEPT_CLAIMS. JupyterHub stores it encrypted (enable_auth_state).
        return {"name": self.get_username(data), "auth_state": kept_claims(data)}
