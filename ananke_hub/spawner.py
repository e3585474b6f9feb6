"""Spawners: systemd dynamic users in production, local processes where PID 1 is not systemd."""

from pathlib import Path


def systemd_is_pid1() -> bool:
    """True when systemd runs the machine (the sd_booted(3) check)."""
    return Path("/run/systemd/system").is_dir()
