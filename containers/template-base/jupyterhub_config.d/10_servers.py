# 10_servers.py: the users' JupyterLab servers.
#
# Each user's lab runs as a systemd transient unit with a dynamic user whose home
# (/var/lib/private/<username>) persists. Limits apply per user.

c = get_config()  # noqa

# Memory per user: systemd MemoryMax (the lab is killed above it). Suffixes K, M, G, T.
c.Spawner.mem_limit = "2G"

# CPU cores per user: systemd CPUQuota (2.0 = two full cores).
c.Spawner.cpu_limit = 2.0

# Seconds a lab may take to start before the hub gives up.
c.Spawner.start_timeout = 120

# The page a user lands on.
c.Spawner.default_url = "/lab"

# Extra directories the lab may write to (the root file system is read-only for labs).
# The nbgrader exchange is always writable.
# c.AnankeSystemdSpawner.readwrite_paths = ["/opt/nbgrader_exchange", "/srv/shared"]
