"""The paths and settings shared by the container manager and the images.

The images (``images/ananke-base``, ``images/ananke-nbgrader``) and the manager agree on
where things live inside a container through the constants below: change them in one
place only.
"""

#: The hub's config fragments, mounted read-only from ``<container>/jupyterhub_config.d``.
IN_CONTAINER_CONFIG_DIR = "/etc/ananke/config.d"
#: Persistent state (cookie secret, crypt key, Kore's keys, course registry, backups),
#: mounted from ``<container>/runtime/state``.
IN_CONTAINER_STATE_DIR = "/var/lib/ananke"
#: Homes of systemd's dynamic users (``StateDirectory=`` of DynamicUser units lives in
#: /var/lib/private, see systemd.exec(5)), mounted from ``<container>/runtime/homes``.
IN_CONTAINER_HOMES_DIR = "/var/lib/private"
#: nbgrader's exchange, mounted from ``<container>/runtime/exchange``. Not under /home:
#: dynamic users cannot reach /home (ProtectHome).
IN_CONTAINER_EXCHANGE_DIR = "/opt/nbgrader_exchange"
#: The persistent journal (optional), mounted from ``<container>/runtime/logs``.
IN_CONTAINER_JOURNAL_DIR = "/var/log/journal"
#: An enterprise root CA from the host; the image's boot runs update-ca-certificates,
#: which picks up ``*.crt`` files in this directory.
IN_CONTAINER_CA_FILE = "/usr/local/share/ca-certificates/ananke-enterprise-ca.crt"
#: The port the hub's proxy listens on inside the container (00_base.py's bind_url).
IN_CONTAINER_HUB_PORT = 8000
#: The systemd unit that runs JupyterHub inside the container.
HUB_UNIT = "jupyterhub.service"
