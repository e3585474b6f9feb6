# 70_named_servers.py: more than one lab per user (JupyterHub's named servers).
#
# With named servers a user can run extra labs next to the default one, each started
# and stopped on its own from the hub's home page (/hub/home), e.g. one per course or a
# room shared with others (80_rtc.py). All of a user's labs run as the same dynamic user
# with the same home; each has the memory and CPU limits of 10_servers.py, so three
# extra labs may use four times the memory of one.

c = get_config()  # noqa

# Off by default: set True to offer named servers.
c.JupyterHub.allow_named_servers = False

# Most named servers per user, besides the default one (0 = no limit).
c.JupyterHub.named_server_limit_per_user = 3
