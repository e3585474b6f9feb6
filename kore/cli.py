"""Kore's public entry points for the ``ananke`` command (``ananke grades sync``,
``ananke roster sync``) and the config behind ``ananke lms``.

Runs in the CLI's own process, with the hub's config; the lock in the registry keeps it
and a running Kore from syncing one course at once. :mod:`ananke_hub.cli` imports only
this module of Kore, and only when one of these commands runs: the rest of Kore is its
own business.
"""

from pathlib import Path


def grades_sync(
    course: str, *, missing: str = "zero", resend: bool = False, config_dir: Path
) -> int:
    """Send a course's grades to the LMS; the command's exit code."""
    from .sync.command import run_command

    return run_command("grades", course, missing=missing, resend=resend, config_dir=config_dir)


def roster_sync(course: str, *, config_dir: Path) -> int:
    """Apply the LMS's roster of a course; the command's exit code."""
    from .sync.command import run_command

    return run_command("roster", course, config_dir=config_dir)


def hub_config(config_dir: Path):
    """The traitlets config the hub and Kore see (course layout defaults, the fragments,
    the environment), for commands that open the registry as they do (``ananke lms``)."""
    from ananke_hub.paths import StateLayout

    from .sync.command import hub_config as _hub_config

    return _hub_config(config_dir, StateLayout.from_env())
