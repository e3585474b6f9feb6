"""The ``ananke container`` sub-commands: argparse wiring, errors turned into exit codes."""

import argparse
import sys
from pathlib import Path

from .config import ConfigError
from .manager import (
    CONTAINERS_DIR_ENV,
    DEFAULT_TEMPLATE,
    ContainerError,
    create,
    default_containers_dir,
    doctor_command,
    init,
    list_containers,
    logs,
    print_list,
    remove,
    shell,
)

#: Exit code when the admin has something to fix (config.py, a missing directory, podman).
EXIT_FIX = 2


def _containers_dir(args) -> Path:
    return Path(args.containers_dir) if args.containers_dir else default_containers_dir()


def _guarded(func):
    """Run a command; a ConfigError or ContainerError is one message on stderr."""

    def run(args) -> int:
        try:
            return func(args)
        except (ConfigError, ContainerError) as exc:
            print(f"ananke container {args.container_command}: {exc}", file=sys.stderr)
            return EXIT_FIX

    return run


@_guarded
def _cmd_init(args) -> int:
    return init(_containers_dir(args), args.name, args.template)


@_guarded
def _cmd_create(args) -> int:
    return create(
        _containers_dir(args),
        args.name,
        dry_run=args.dry_run,
        check_config=not args.no_check_config,
        check_rootless_host=not args.no_host_check,
    )


@_guarded
def _cmd_doctor(args) -> int:
    return doctor_command(_containers_dir(args), args.name)


@_guarded
def _cmd_remove(args) -> int:
    return remove(_containers_dir(args), args.name)


@_guarded
def _cmd_list(args) -> int:
    print_list(list_containers(_containers_dir(args)))
    return 0


@_guarded
def _cmd_shell(args) -> int:
    return shell(_containers_dir(args), args.name)


@_guarded
def _cmd_logs(args) -> int:
    return logs(_containers_dir(args), args.name, follow=args.follow, console=args.console)


def add_container_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``container init|create|remove|list|shell|logs`` to the ``ananke`` parser."""
    container = subparsers.add_parser(
        "container", help="make, create, remove, list and enter Ananke's Podman containers"
    )
    dir_help = (
        f"directory of the container directories (default: ${CONTAINERS_DIR_ENV}, "
        "else ./containers)"
    )
    container.add_argument("--containers-dir", help=dir_help)
    sub = container.add_subparsers(dest="container_command", required=True)
    name_help = "the container's directory name in the containers directory, e.g. my-hub"

    def command(name: str, func, text: str, with_name: bool = True):
        parser = sub.add_parser(name, help=text, description=text)
        if with_name:
            parser.add_argument("name", help=name_help)
        # accepted after the sub-command too: `ananke container create my-hub --containers-dir D`
        parser.add_argument("--containers-dir", default=argparse.SUPPRESS, help=dir_help)
        parser.set_defaults(func=func)
        return parser

    init_parser = command(
        "init",
        _cmd_init,
        "make the container directory NAME from a template: its config.py and, in "
        "jupyterhub_config.d, the fragments this Ananke ships (never overwrites)",
    )
    init_parser.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        help=f"the template directory template-TEMPLATE to use: nbgrader or base "
        f"(default: {DEFAULT_TEMPLATE})",
    )
    create_parser = command(
        "create",
        _cmd_create,
        "turn NAME/config.py into `podman run` and start the container; "
        "runtime data (homes, state, exchange) is created once and reused",
    )
    create_parser.add_argument(
        "--dry-run", action="store_true", help="print the podman command, run nothing"
    )
    create_parser.add_argument(
        "--no-check-config",
        action="store_true",
        help="do not refuse when `ananke check-config` finds errors in jupyterhub_config.d",
    )
    create_parser.add_argument(
        "--no-host-check",
        action="store_true",
        help="rootless: do not refuse when `ananke container doctor` finds errors",
    )
    doctor_parser = command(
        "doctor",
        _cmd_doctor,
        "what this host and account lack for rootless containers, each with its fix; "
        "with NAME, that container's port and settings too",
        False,
    )
    doctor_parser.add_argument("name", nargs="?", help=name_help)
    command("remove", _cmd_remove, "stop and remove the container; NAME/runtime/ stays")
    command("list", _cmd_list, "the containers of this directory and their state", False)
    command("shell", _cmd_shell, "a bash shell in the running container")
    logs_parser = command("logs", _cmd_logs, "the hub's log (journalctl -u jupyterhub)")
    logs_parser.add_argument("-f", "--follow", action="store_true", help="keep printing")
    logs_parser.add_argument(
        "--console",
        action="store_true",
        help="podman's log of the container's console (systemd's boot) instead",
    )
    return container


def _cmd_add_admin(args) -> int:
    from .host import HostError, add_admin

    try:
        return add_admin(args.name, ports=args.ports, dry_run=args.dry_run)
    except HostError as exc:
        print(f"ananke host add-admin: {exc}", file=sys.stderr)
        return EXIT_FIX


def add_host_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``host add-admin`` (for the host admin, as root) to the ``ananke`` parser."""
    host = subparsers.add_parser("host", help="set up a host for container admins (as root)")
    sub = host.add_subparsers(dest="host_command", required=True)
    text = (
        "create (or complete) a container admin: an unprivileged user with a private home, "
        "subordinate uid/gid ranges of its own, linger, and optionally a host port range"
    )
    add = sub.add_parser("add-admin", help=text, description=text)
    add.add_argument("name", help="the admin's user name, e.g. hub-physics")
    add.add_argument(
        "--ports", help="host ports reserved for this admin, START-END (e.g. 20000-20099)"
    )
    add.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")
    add.set_defaults(func=_cmd_add_admin)
    return host
