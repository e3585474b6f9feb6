# 60_culler.py: stop labs nobody uses (jupyterhub-idle-culler, a hub-managed service).
#
# An idle lab still holds its memory and its kernels. The culler asks the hub every
# `cull_every` seconds which servers had no activity for `timeout` seconds and stops
# them; the user's files stay, the next launch starts the lab again. Open kernels and
# browser tabs count as activity. To switch the culler off, rename this file to
# 60_culler.py.disabled.

import sys

c = get_config()  # noqa

timeout = 3 * 24 * 3600  # cull after 3 days without activity (as the original Ananke)
cull_every = 12 * 3600  # look every 12 hours

c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={timeout}",
            f"--cull-every={cull_every}",
        ],
    },
]

# The least the culler needs: list users and their servers' activity, stop servers.
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "description": "Stops servers idle for longer than the culler's timeout.",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
]

# A later fragment that sets c.JupyterHub.services or load_roles adds its entries to
# these (an entry with the same name replaces that entry): services and roles of all
# fragments are merged by name (Kore is added by Ananke itself).
