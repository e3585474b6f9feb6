# 10_servers.py: the users' JupyterLab servers.
#
# Each user's lab runs as a systemd transient unit with a dynamic user whose home
# (/var/lib/private/<username>) persists. Limits apply per user.

c = get_config()  # noqa

# Memory per user: systemd MemoryMax (the lab is killed above it). Suffixes K, M, G, T.
c.Spawner.mem_limit = "2G"

# CPU cores per user: systemd CPUQuota (2.0 = two full cores).
c.Spawner.cpu_limit = 2.0

# How long a student may wait for their lab: the hub gives up (and the waiting page
# shows an error) after start_timeout seconds, counted from the click and including the
# wait in the start queue below. A lab answers HTTP within http_timeout seconds of its
# process starting, or it is stopped. JupyterHub's default http_timeout (30 s) ends labs
# that are still starting when a class clicks at once: keep it set.
c.Spawner.start_timeout = 600
c.Spawner.http_timeout = 120

# Labs starting at the same time; the others wait in order and their waiting page shows
# their place in the queue. Default: the number of CPU cores (at least 2). 0: no limit.
# c.Spawner.concurrent_starts = 4

# The page a user lands on.
c.Spawner.default_url = "/lab"

# Extra directories the lab may write to (the root file system is read-only for labs).
# The nbgrader exchange is always writable.
# c.AnankeSystemdSpawner.readwrite_paths = ["/opt/nbgrader_exchange", "/srv/shared"]
