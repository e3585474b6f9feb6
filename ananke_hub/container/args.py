"""A container's settings as ``podman run`` arguments (pure: no podman, no files touched).

The arguments carry the original's (Ananke's run.sh: ``-p``, ``--cap-add SYS_ADMIN``, the
dynamic users' homes bound to /var/lib/private, ``-m``) plus what a systemd container
needs here: ``--systemd=always``, explicit ulimits, the OCI runtime, and the mounts of
the config fragments, the state and the nbgrader exchange at the paths the images use.
"""

import ipaddress

from .config import (
    IN_CONTAINER_CA_FILE,
    IN_CONTAINER_CONFIG_DIR,
    IN_CONTAINER_EXCHANGE_DIR,
    IN_CONTAINER_HOMES_DIR,
    IN_CONTAINER_JOURNAL_DIR,
    IN_CONTAINER_STATE_DIR,
    ConfigError,
    LoadedContainer,
    parse_volume,
)

#: Labels on every container the manager creates: `list` finds them by these.
LABEL_NAME = "io.ananke.container"
LABEL_DIR = "io.ananke.directory"


def _bind(source, target: str, readonly: bool = False) -> list[str]:
    # --mount rather than -v: the fields are named, and a missing source is an error
    # instead of a silently created empty directory (podman-run(1), "--mount").
    spec = f"type=bind,source={source},destination={target}"
    return ["--mount", spec + (",readonly=true" if readonly else "")]


def _published_port(container: LoadedContainer) -> str:
    settings = container.settings
    address = ipaddress.ip_address(settings.bind_address)
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{settings.port}:{settings.container_port}"


#: Rootless: the container's user namespace. "host" is the caller's own namespace (the
#: admin's uid as root inside, its /etc/subuid range for uids 1..65536), the same on
#: every `create`, so the owners of files in runtime/homes (dynamic users' uids
#: 61184-65519, systemd.exec(5) "DynamicUser=") still match after re-creation.
#: Stated explicitly because containers.conf or $PODMAN_USERNS may say "auto" (a new
#: range per container: old homes turn to nobody) or "keep-id" (uids shifted by one).
ROOTLESS_USERNS = "host"
#: Rootless network: slirp4netns, podman's rootless default (podman-run(1), "--network"),
#: which publishes the port through rootlessport on the address given with -p. Without
#: allow_host_loopback the container cannot reach the host's 127.0.0.1, where other
#: admins' hubs listen.
ROOTLESS_NETWORK = "slirp4netns"


def run_argv(
    container: LoadedContainer, podman: str = "podman", rootless: bool = False
) -> list[str]:
    """The full ``podman run`` command line that creates and starts ``container``.

    ``rootless``: podman runs as an unprivileged container admin (euid not 0). The
    arguments then differ only in the user namespace (pinned, :data:`ROOTLESS_USERNS`)
    and the network mode of "bridge" (:data:`ROOTLESS_NETWORK`); the port stays
    published on ``bind_address`` (127.0.0.1 unless the admin says otherwise).
    """
    settings = container.settings
    layout = container.layout
    # --mount separates its fields with commas: a comma in a path would split it.
    if "," in str(layout.directory):
        raise ConfigError(
            layout.config_file,
            None,
            f"the container directory {layout.directory} has a comma in its path, which "
            "podman's --mount cannot take.",
            "move the containers directory to a path without commas.",
        )
    if "," in settings.ca_file:
        raise ConfigError(
            layout.config_file,
            "ca_file",
            f"{settings.ca_file!r} has a comma, which podman's --mount cannot take.",
            "copy the certificate to a path without commas.",
        )

    # The runtime is a global podman option (podman(1), "--runtime").
    argv = [podman, "--runtime", settings.runtime, "run", "--detach"]
    argv += ["--name", container.name, "--hostname", container.hostname]
    argv += [f"--label={LABEL_NAME}={container.name}", f"--label={LABEL_DIR}={layout.directory}"]
    # Never reach for a registry: the image is built or loaded locally.
    argv += ["--pull=never"]
    # systemd as PID 1: podman mounts the tmpfs and cgroup it needs and stops the
    # container with SIGRTMIN+3, systemd's orderly shutdown (podman-run(1), "--systemd").
    argv += ["--systemd=always", f"--stop-timeout={settings.stop_timeout}"]
    # DynamicUser= needs to create users and mount namespaces for each lab.
    # Rootless too: the capability is scoped to the container's user namespace, and
    # without it a DynamicUser= unit fails with 226/NAMESPACE.
    argv += ["--cap-add", "SYS_ADMIN"]
    if rootless:
        argv += [f"--userns={ROOTLESS_USERNS}"]
    network = settings.network
    if rootless and network == "bridge":
        network = ROOTLESS_NETWORK
    argv += ["--network", network]
    if settings.network == "bridge":
        argv += ["-p", _published_port(container)]
    if settings.memory is not None:
        argv += ["-m", settings.memory]
    if settings.memory_swap is not None:
        argv += ["--memory-swap", settings.memory_swap]
    if settings.cpus is not None:
        argv += ["--cpus", f"{settings.cpus:g}"]
    argv += ["--pids-limit", str(settings.pids_limit)]
    for name in sorted(settings.ulimits):
        argv += ["--ulimit", f"{name}={settings.ulimits[name]}"]
    for gpu in settings.gpus:
        # CDI device names (podman-run(1), "--device"; NVIDIA Container Toolkit's CDI).
        argv += ["--device", "nvidia.com/gpu=all" if gpu == "all" else gpu]
    argv += [f"--tz={settings.timezone}"]
    argv += [f"--restart={settings.restart}"]

    argv += _bind(layout.homes, IN_CONTAINER_HOMES_DIR)
    argv += _bind(layout.state, IN_CONTAINER_STATE_DIR)
    argv += _bind(layout.exchange, IN_CONTAINER_EXCHANGE_DIR)
    argv += _bind(layout.fragments, IN_CONTAINER_CONFIG_DIR, readonly=True)
    if settings.persist_journal:
        argv += _bind(layout.logs, IN_CONTAINER_JOURNAL_DIR)
    if settings.ca_file:
        argv += _bind(settings.ca_file, IN_CONTAINER_CA_FILE, readonly=True)
    for spec in settings.volumes:
        host, target, options = parse_volume(spec)
        argv += ["--volume", ":".join([host, target, *([",".join(options)] if options else [])])]

    argv += list(settings.extra_args)
    argv.append(settings.image)
    return argv
