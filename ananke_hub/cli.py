"""The ``ananke`` command: demo, config checks, key rotation, grade and roster syncs.

Each sub-command lives in the module of its responsibility; this file only wires
argparse to them. Library code raises; errors become exit codes here.
"""

import argparse
import sys
from pathlib import Path

from . import __version__, redact
from .container.commands import add_container_commands
from .paths import StateLayout, config_dir, shipped_fragments


def _cmd_demo(args) -> int:
    from ananke_hub.testlms.demo import run_demo

    return run_demo(Path(args.dir), open_browser=args.open)


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
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue  # never overwrite an admin's edits
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(source.read_bytes())
        copied.append(dest.name)
    print(f"{target}: added {', '.join(copied) if copied else 'nothing (all present)'}")
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
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check-config", help="load the config fragments and report problems")
    check.add_argument("directory", nargs="?", default=str(config_dir()))
    check.add_argument("--offline", action="store_true", help="do not fetch the LMS's keyset")
    check.set_defaults(func=_cmd_check_config)

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

    add_container_commands(sub)
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
