# 00_base.py: where the hub listens and how it is reached.
#
# Fragments are plain JupyterHub config files, loaded in sorted order: a later file
# overrides an earlier one. A file ending in ".disabled" is skipped. Check your changes
# with `ananke check-config /etc/ananke/config.d` before restarting the hub.

c = get_config()  # noqa

# Address and port of the hub's public proxy. Behind a reverse proxy that terminates
# TLS, keep this on an internal address and set uri_scheme in 30_lms.py to "https".
c.JupyterHub.bind_url = "http://:8000"

# Time zone for the hub's log (the container's TZ variable sets the system's).
# c.JupyterHub.log_datefmt = "%Y-%m-%d %H:%M:%S"
