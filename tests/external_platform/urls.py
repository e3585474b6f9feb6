"""Where this platform's LTI Advantage services live: the built-in test platform's layout,
so that a tool meets the same URL shapes (a line item URL with a query included) on both.

The library takes every URL from us: the launch claims advertise what ``set_ags`` and
``set_nrps`` are given, the service classes only use them for ``next`` links.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceURLs:
    issuer: str

    def _url(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    @property
    def token(self) -> str:
        return self._url("/token")

    def lineitems(self, context_id: str) -> str:
        return self._url(f"/ags/{context_id}/lineitems")

    def lineitem(self, context_id: str, key: str) -> str:
        """A line item the tool created (the platform picks ``key``)."""
        return self._url(f"/ags/{context_id}/lineitems/{key}/lineitem")

    def launch_lineitem(self, context_id: str, link_id: str) -> str:
        """The activity's own line item. A query, as Moodle's (``?type_id=1``): a tool must
        put ``/scores`` into the path before it (AGS 2.0 section 3.4)."""
        return self.lineitem(context_id, link_id) + "?type_id=1"

    def memberships(self, context_id: str) -> str:
        return self._url(f"/nrps/{context_id}/memberships")
