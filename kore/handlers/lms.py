"""Kore's LMS page for hub admins: ``<prefix>admin/lms``.

Lists the hub's LMS registrations (the one in 30_lms.py, "from config", first), makes a
registration URL to paste into an LMS (LTI Dynamic Registration, see
ananke_hub/auth/dynreg.py), and disables, enables or removes a registration. The same
operations as ``ananke lms ...``, through the same store, and audit-logged by it. Hub
admins only: the identity and the admin flag come from the hub.
"""

from tornado import web

from ananke_hub.registrations import (
    DISABLED,
    ENABLED,
    REMOVED,
    DynamicRegistration,
    RegistrationError,
    RegistrationStore,
    registration_url,
)
from ananke_hub.usernames import UsernameRule

from .base import ChangeRequestMixin, PageHandler
from .ui import hub_base_url

#: Form actions and the state each sets.
ACTIONS = {"disable": DISABLED, "enable": ENABLED, "remove": REMOVED}


class LMSPageHandler(PageHandler):
    @property
    def json_errors(self) -> bool:
        # The page's forms post here; a refused post (no login, no XSRF token) is
        # answered as Kore's other changing routes answer: JSON that says why.
        return self.request.method != "GET"

    @property
    def store(self) -> RegistrationStore:
        store = self.settings.get("registration_store")
        if store is None:
            kore = self.settings["kore"]
            store = self.settings["registration_store"] = RegistrationStore(
                self.settings["course_registry"],
                self.settings["lms_registration"],
                UsernameRule.from_config(kore.config).prefix,
            )
        return store

    def require_admin(self) -> None:
        if not self.hub_user.get("admin"):
            raise web.HTTPError(
                403, "Only hub admins manage the LMS registrations. Ask a hub admin."
            )

    def hub_url(self) -> str:
        configured = DynamicRegistration(config=self.settings["kore"].config).hub_url
        if configured:
            return configured
        # Through the hub's proxy: the host the admin's browser uses for the hub.
        return f"{self.request.protocol}://{self.request.host}{hub_base_url()}".rstrip("/")

    async def show(self, *, new_url: str = "", message: str = "", error: str = "", status=200):
        registry = self.store.registry
        entries = await registry.run(lambda: self.store.entries(include_removed=True))
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")  # it may show a registration URL
        lifetime = DynamicRegistration(config=self.settings["kore"].config).url_lifetime
        self.render(
            "lms.html",
            entries=entries,
            new_url=new_url,
            message=message,
            error=error,
            lifetime_minutes=f"{lifetime / 60:g}",
            xsrf=self.xsrf_text,
        )

    @web.authenticated
    async def get(self):
        self.require_admin()
        await self.show()

    async def post(self):
        ChangeRequestMixin.require_user(self)  # 403 saying why: no login, or no XSRF token
        self.require_admin()
        action = self.get_body_argument("action", "")
        actor = self.hub_user["name"]
        registry = self.store.registry
        try:
            if action == "new-url":
                prefix = self.get_body_argument("username_prefix", "").strip()
                lifetime = DynamicRegistration(config=self.settings["kore"].config).url_lifetime
                secret = await registry.run(
                    lambda: self.store.create_ticket(
                        ttl=lifetime, actor=actor, username_prefix=prefix
                    )
                )
                return await self.show(new_url=registration_url(self.hub_url(), secret))
            if action in ACTIONS:
                registration_id = self.get_body_argument("id", "")
                reg = await registry.run(
                    lambda: self.store.set_state(registration_id, ACTIONS[action], actor=actor)
                )
                self.log.info("user:%s lms registration %s: %s", actor, reg.id, reg.state)
                return await self.show(
                    message=f"Registration {reg.id} ({reg.issuer}) is {reg.state}."
                )
        except RegistrationError as exc:
            return await self.show(error=str(exc), status=400)
        raise web.HTTPError(400, "Unknown action %r: new-url, disable, enable or remove.", action)


handlers = [(r"admin/lms", LMSPageHandler)]
