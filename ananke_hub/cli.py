"""The ``ananke`` command: demo, config checks, key rotation, grade and roster syncs.

Each sub-command lives in the module of its responsibility; this file only wires
argparse to them. Library code raises; errors become exit codes here.
"""

import argparse
import json
import sys
from pathlib import Path

from . import __version__, fsutil, redact
from .container.commands import add_container_commands, add_host_commands
from .paths import StateLayout, config_dir, shipped_fragments


def _cmd_demo(args) -> int:
    from ananke_hub.testlms.demo import run_demo

    return run_demo(Path(args.dir), open_browser=args.open, register_by_url=args.register_by_url)


def _cmd_check_config(args) -> int:
    from .checkconfig import check_config_dir, print_report

    problems = check_config_dir(
        Path(args.directory), check_network=not args.offline, state_dir=StateLayout.from_env().root
    )
    return print_report(problems)


def _cmd_init_config(args) -> int:
    import os

    target = Path(args.directory)
    # Fragments hold the LMS registration and may hold a database password: private
    # to the hub's user (modes set explicitly, whatever the umask).
    if not target.exists():
        target.mkdir(parents=True, mode=0o700)
        os.chmod(target, 0o700)
    copied = []
    for source in shipped_fragments():
        dest = target / source.name
        try:
            fsutil.write_file(dest, source.read_bytes(), 0o600, replace=False)
        except FileExistsError:
            continue  # never overwrite an admin's edits
        copied.append(dest.name)
    print(f"{target}: added {', '.join(copied) if copied else 'nothing (all present)'}")
    return 0


def _cmd_upgrade_db(args) -> int:
    from .courses.registry import CourseRegistry
    from .courses.schema import upgrade
    from .fragments import FragmentError, load_fragments

    url = args.url
    if not url:
        try:
            fragments = load_fragments(config_dir())
        except FragmentError as exc:
            print(f"{exc}. Fix the fragment, or give the database with --url.", file=sys.stderr)
            return 2
        url = CourseRegistry(config=fragments.config).url
    try:
        upgrade(url)
    except Exception as exc:  # the CLI edge: one line for the admin, no traceback
        print(f"upgrade-db: {redact.redact(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _keystore(args):
    from .keys import KeyStore
    from .persist import ensure_private_dir

    layout = StateLayout(Path(args.state_dir)) if args.state_dir else StateLayout.from_env()
    ensure_private_dir(layout.secrets)  # the first command on a fresh state dir may be this
    return KeyStore(layout.kore_keys)


def _cmd_keys_list(args) -> int:
    store = _keystore(args)
    keys = store.load()
    if not keys:
        print(f"No keys in {store.directory} yet: Kore creates the first on its first start.")
        return 0
    for key in keys:
        role = "signing" if key is keys[-1] else "published"
        print(f"{key.kid}  {role}")
    return 0


def _cmd_keys_rotate(args) -> int:
    store = _keystore(args)
    store.ensure()
    new = store.rotate()
    published = ", ".join(k.kid for k in store.load())
    print(f"New signing key {new.kid}. Published now: {published}")
    return 0


def _cmd_grades_sync(args) -> int:
    from kore.cli import grades_sync

    return grades_sync(
        args.course, missing=args.missing, resend=args.resend, config_dir=config_dir()
    )


def _cmd_roster_sync(args) -> int:
    from kore.cli import roster_sync

    return roster_sync(args.course, config_dir=config_dir())


def _lms_setup():
    """The registry and the registrations store, as the hub sees them."""
    from kore.cli import hub_config

    from .courses.registry import CourseRegistry
    from .registration import LMSRegistration
    from .registrations import DynamicRegistration, RegistrationStore
    from .usernames import UsernameRule

    cfg = hub_config(config_dir())
    store = RegistrationStore(
        CourseRegistry(config=cfg),
        LMSRegistration(config=cfg),
        UsernameRule.from_config(cfg).prefix,
    )
    hub_url = DynamicRegistration(config=cfg).hub_url or (
        cfg.JupyterHub.get("public_url") or cfg.JupyterHub.get("bind_url") or ""
    )
    return store, DynamicRegistration(config=cfg), hub_url


def _actor() -> str:
    import getpass

    return "cli:" + getpass.getuser()


def _lms(func):
    """Run an `ananke lms` command; a refused change is an error message, exit code 2."""

    def run(args) -> int:
        # Imported here, not when the decorator runs at import: registrations pulls in
        # SQLAlchemy and alembic, seconds of CPU that every `ananke` command paid
        # (minutes under emulation, the VM test's `ananke container` commands).
        from .registrations import RegistrationError

        try:
            return func(args)
        except RegistrationError as exc:
            print(f"ananke lms: {exc}", file=sys.stderr)
            return 2

    return run


@_lms
def _cmd_lms_registration_url(args) -> int:
    from .registrations import registration_url

    store, settings, hub_url = _lms_setup()
    hub_url = args.hub_url or hub_url
    if not hub_url:
        print(
            "ananke lms: the hub's public URL is unknown: set c.DynamicRegistration.hub_url "
            "(or c.JupyterHub.public_url) or pass --hub-url.",
            file=sys.stderr,
        )
        return 2
    lifetime = args.expires or settings.url_lifetime
    secret = store.create_ticket(
        ttl=lifetime, actor=_actor(), username_prefix=args.username_prefix or ""
    )
    print(registration_url(hub_url, secret))
    print(
        f"Paste it into the LMS's tool registration within {lifetime / 60:g} minutes; "
        "it registers one LMS once.",
        file=sys.stderr,
    )
    return 0


@_lms
def _cmd_lms_list(args) -> int:
    store, _, _ = _lms_setup()
    entries = store.entries(include_removed=args.all)
    if args.json:
        print(json.dumps([r.as_dict() for r in entries], indent=2))
        return 0
    if not entries:
        print("No LMS is registered. `ananke lms registration-url` makes a registration URL.")
        return 0
    print(f"{'ID':<7} {'STATE':<9} {'PREFIX':<7} {'ISSUER':<40} CLIENT ID / SOURCE")
    for r in entries:
        print(
            f"{r.id:<7} {r.state:<9} {r.username_prefix or '-':<7} {r.issuer:<40} "
            f"{', '.join(r.client_ids)} ({r.source})"
        )
    return 0


def _state_command(state: str, done: str):
    @_lms
    def run(args) -> int:
        store, _, _ = _lms_setup()
        reg = store.set_state(args.id, state, actor=_actor())
        print(f"Registration {reg.id} ({reg.issuer}) {done}.")
        return 0

    return run


#: What ``ananke --help`` says first: plain text (the docstring above is reST).
DESCRIPTION = (
    "Ananke, a JupyterHub distribution for teaching: the demo, config checks, "
    "key rotation, grade and roster syncs, containers."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ananke", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ananke {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run a demo hub, Kore and a built-in LMS on 127.0.0.1; a later run in the "
        "same --dir goes on with its courses, grades and ports",
    )
    demo.add_argument("--dir", default=".ananke-demo", help="state and config of the demo")
    demo.add_argument("--open", action="store_true", help="open the LMS page in a browser")
    demo.add_argument(
        "--register-by-url",
        action="store_true",
        help="leave 30_lms.py's registration out and print a registration URL to paste "
        "into the demo LMS's Manage tools page (LTI Dynamic Registration)",
    )
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check-config", help="load the config fragments and report problems")
    check.add_argument("directory", nargs="?", default=str(config_dir()))
    check.add_argument("--offline", action="store_true", help="do not fetch the LMS's keyset")
    check.set_defaults(func=_cmd_check_config)

    upgrade = sub.add_parser(
        "upgrade-db",
        help="upgrade the Ananke database (c.CourseRegistry.url) to this release's schema; "
        "stop the hub and back the database up first",
    )
    upgrade.add_argument(
        "--url", help="SQLAlchemy URL of the database (default: from the config fragments)"
    )
    upgrade.set_defaults(func=_cmd_upgrade_db)

    init = sub.add_parser("init-config", help="copy the shipped fragments into a directory")
    init.add_argument("directory", nargs="?", default=str(config_dir()))
    init.set_defaults(func=_cmd_init_config)

    keys = sub.add_parser("keys", help="Kore's signing keys (the tool's JWKS)")
    state_help = "state directory (default: $ANANKE_STATE_DIR)"
    keys.add_argument("--state-dir", help=state_help)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    for name, func, text in [
        ("list", _cmd_keys_list, "list published keys"),
        ("rotate", _cmd_keys_rotate, "create a new signing key; the previous one stays published"),
    ]:
        cmd = keys_sub.add_parser(name, help=text)
        # accepted after the sub-command too: `ananke keys rotate --state-dir X`
        cmd.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_help)
        cmd.set_defaults(func=func)

    course_help = "the course id (c- and 16 hex digits, as Kore's api/courses shows it)"
    grades = sub.add_parser("grades", help="send nbgrader grades to the LMS (LTI AGS)")
    grades_sub = grades.add_subparsers(dest="grades_command", required=True)
    grades_sync = grades_sub.add_parser(
        "sync",
        help="send every student's score per assignment and the course total to the LMS",
    )
    grades_sync.add_argument("course", help=course_help)
    grades_sync.add_argument(
        "--missing",
        choices=["zero", "not_submitted"],
        default="zero",
        help="what a student without a submission gets: 0, or no score (default: zero)",
    )
    grades_sync.add_argument(
        "--resend", action="store_true", help="send scores the LMS has already, too"
    )
    grades_sync.set_defaults(func=_cmd_grades_sync)

    roster = sub.add_parser("roster", help="the LMS course roster (LTI NRPS)")
    roster_sub = roster.add_subparsers(dest="roster_command", required=True)
    roster_sync = roster_sub.add_parser(
        "sync",
        help="enrol the LMS's course members in the registry, gradebook and hub group",
    )
    roster_sync.add_argument("course", help=course_help)
    roster_sync.set_defaults(func=_cmd_roster_sync)

    lms = sub.add_parser("lms", help="the LMS registrations (LTI Dynamic Registration)")
    lms_sub = lms.add_subparsers(dest="lms_command", required=True)
    reg_url = lms_sub.add_parser(
        "registration-url",
        help="a single-use, expiring URL to paste into an LMS's tool registration",
    )
    reg_url.add_argument("--expires", type=float, help="seconds it stays valid (default 3600)")
    reg_url.add_argument(
        "--username-prefix",
        help="prefix of this LMS's usernames (a further LMS only; default: chosen by the hub)",
    )
    reg_url.add_argument("--hub-url", help="the hub's public URL (default: from the config)")
    reg_url.set_defaults(func=_cmd_lms_registration_url)
    lms_list = lms_sub.add_parser("list", help="the registrations, the one in 30_lms.py first")
    lms_list.add_argument("--all", action="store_true", help="removed ones too")
    lms_list.add_argument("--json", action="store_true", help="as JSON")
    lms_list.set_defaults(func=_cmd_lms_list)
    for name, state, done, text in [
        ("disable", "disabled", "disabled", "refuse launches from a registration, for now"),
        ("enable", "enabled", "enabled", "allow launches from a disabled registration again"),
        ("remove", "removed", "removed (its courses and users stay)", "remove a registration"),
    ]:
        cmd = lms_sub.add_parser(name, help=text)
        cmd.add_argument("id", help="the registration's id, as `ananke lms list` shows it")
        cmd.set_defaults(func=_state_command(state, done))

    add_container_commands(sub)
    add_host_commands(sub)
    return parser


def main(argv=None) -> int:
    redact.install()  # the sync jobs' log lines, the libraries' too
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"ananke {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
