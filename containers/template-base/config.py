# config.py: one Ananke container (read by `ananke container create`).
#
# Make a container directory from this template (its config.py, and the fragments
# Ananke ships in jupyterhub_config.d/), edit both, then create the container:
#     ananke container init my-hub --template base
#     ananke container create my-hub --dry-run    # shows the podman command
#     ananke container create my-hub
# This is traitlets config: only `c.Container.<setting> = <value>` lines. Every setting
# is explained in docs/admin/containers.md; a wrong value is refused with the fix.
# Data that must survive the container (homes, keys, the exchange) is kept in runtime/
# next to this file; `ananke container remove my-hub` never deletes it.

c = get_config()  # noqa

# The image: "ananke-base" (hub, LTI login, Kore; no teaching kernels) or
# "ananke-nbgrader" (the same plus the course kernels).
# It must exist locally (`podman images`); the manager never pulls.
c.Container.image = "ananke-base"

# Podman container name and host name inside it. Empty: the directory's name.
# c.Container.name = ""
# c.Container.hostname = ""

# Where the hub is published on the host. 127.0.0.1 keeps its plain HTTP local, for a
# reverse proxy with HTTPS on this host; "0.0.0.0" publishes it on every address.
c.Container.port = 8000
c.Container.bind_address = "127.0.0.1"
# The hub's port inside the container (change only with bind_url in 00_base.py).
# c.Container.container_port = 8000

# Limits of the whole container (hub and all labs). Per-user limits are in
# jupyterhub_config.d/10_servers.py. None: no limit.
c.Container.memory = "8g"  # "8g" = 8 GiB, "512m" = 512 MiB
# c.Container.memory_swap = "16g"  # memory plus swap; "-1" = unlimited swap
# c.Container.cpus = 4.0  # cores (2.5 = two and a half)
# c.Container.pids_limit = 32768  # processes and threads; -1 = no limit

# NVIDIA GPUs by CDI name (`nvidia-ctk cdi list`): ["all"] or ["nvidia.com/gpu=0"].
# c.Container.gpus = ["all"]

# Extra host directories: "HOST:CONTAINER" or "HOST:CONTAINER:ro". Absolute host
# paths only ("~" and relative paths are refused). For a volume labs write to, see
# jupyterhub_config.d/15_volumes.py.disabled.
# c.Container.volumes = ["/srv/datasets:/srv/datasets:ro"]

# Time zone ("Europe/Berlin", "UTC"), or "local" for the host's.
c.Container.timezone = "local"

# An enterprise root CA (PEM) the hub must trust, e.g. for the LMS's certificate.
# c.Container.ca_file = "/usr/local/share/ca-certificates/campus-root.crt"

# "bridge" (own network, only the port published) or "host" (the host's network).
# c.Container.network = "bridge"

# OCI runtime: "runc" (default; systemd as PID 1 runs reliably with it) or "crun".
# c.Container.runtime = "runc"

# Resource limits of the container's processes, "SOFT:HARD"; at most the hard limits
# of your shell (`ulimit -Hn`, `ulimit -Hu`).
# c.Container.ulimits = {"nofile": "16384:16384", "nproc": "16384:16384"}

# "always" restarts the container, and starts it at boot when podman-restart.service
# is enabled. "no" leaves it stopped.
# c.Container.restart = "always"

# Seconds systemd in the container gets to stop the hub and labs on remove.
# c.Container.stop_timeout = 60

# Keep the journal (hub, Kore and lab logs) in runtime/logs across re-creation.
# c.Container.persist_journal = False

# Escape hatch: extra `podman run` options, added last (not validated).
# c.Container.extra_args = ["--security-opt", "label=disable"]
