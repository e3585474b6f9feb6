"""The hub's own timing of the login requests, read from its log.

JupyterHub logs every request with the time its handler took
(``302 POST /hub/lti13/oauth_callback -> /hub/ (u1000@127.0.0.1) 23.45ms``). That time
leaves out the proxy, the client and the queue in front of the hub, so it shows what
the authenticator itself costs, even on a machine busy with other work.
"""

import asyncio
import re
import time
from pathlib import Path

_LOGIN_REQUEST = re.compile(
    r"\] (?P<status>\d{3}) POST /hub/lti13/oauth_(?P<step>login|callback)\b.* (?P<ms>[\d.]+)ms$"
)
STEPS = {"login": "initiation", "callback": "callback"}


class HubLog:
    """The part of a hub's log written since :meth:`mark`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def _read(self) -> dict[str, list[float]]:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            text = f.read().decode("utf8", "replace")
        times: dict[str, list[float]] = {name: [] for name in STEPS.values()}
        for line in text.splitlines():
            match = _LOGIN_REQUEST.search(line)
            if match and match["status"] == "302":
                times[STEPS[match["step"]]].append(float(match["ms"]))
        return times

    async def since_mark(self, callbacks: int, wait: float = 3.0) -> dict[str, list[float]]:
        """Handler times (ms) of successful initiations and callbacks since the mark.

        The hub writes a request's line after answering it: wait (at most ``wait``
        seconds) until the ``callbacks`` expected lines are there.
        """
        deadline = time.monotonic() + wait
        while True:
            times = self._read()
            if len(times["callback"]) >= callbacks or time.monotonic() > deadline:
                return times
            await asyncio.sleep(0.1)
