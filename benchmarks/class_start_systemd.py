"""class_start.py's systemd variant: ours with AnankeSystemdSpawner under a real systemd.

The machines we test on do not run systemd as PID 1, so this boots one with the
real-systemd tests' machinery (tests/systemd: ``rootfs.py`` layers, ``nspawn.py``
container, ``container_hub.py`` starting the built-in LMS and the hub with the shipped
config as systemd units; see docs/developer/testing.md). The shipped config then picks
the systemd spawner: each lab is a transient unit ``jupyter-<user>`` with a dynamic user.

The class itself is driven by class_start.py's own student (``one_student``), started
as a host program in the container's network namespace (``--drive``): the container has
only its own loopback. Hub and Kore CPU and memory per lab come from /proc on the host
(the container's processes are the host's; systemd inside cannot account them, no
cgroup controllers are delegated to it), the hub's start times from its journal.

No baseline here: upstream's plain spawner does not run labs as systemd units. Needs
root, systemd-nspawn, nsenter, overlayfs and mmdebstrap or debootstrap (the systemd
tests' prerequisites).
"""

import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD_TESTS = ROOT / "tests" / "systemd"
LMS_STATE = "/var/lib/ananke-lms"  # container_hub.py's LMS unit: StateDirectory=ananke-lms


def _systemd_harness():
    """tests/systemd's modules (rootfs, nspawn, container_hub) and its prerequisite check."""
    for path in (SYSTEMD_TESTS, ROOT / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import container_hub
    import nspawn
    import rootfs

    spec = importlib.util.spec_from_file_location("systemd_conftest", SYSTEMD_TESTS / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return rootfs, nspawn, container_hub, conftest.missing_prerequisites


def run_class(args, workdir: Path) -> dict:
    """Boot the container, start the hub, let the class click; the class's numbers."""
    rootfs, nspawn, container_hub, missing_prerequisites = _systemd_harness()
    missing = missing_prerequisites()
    if missing:
        raise RuntimeError("the systemd variant needs: " + "; ".join(missing))
    run_dir = nspawn.new_run_dir()
    try:
        booted = time.monotonic()
        layers = rootfs.ensure_layers(run_dir)
        with nspawn.SystemdContainer(layers, run_dir) as container:
            hub = container_hub.ContainerHub(container)
            try:
                hub.start()
            except BaseException:
                print(hub.logs(), file=sys.stderr)
                raise
            print(f"systemd: container and hub up in {time.monotonic() - booted:.0f} s", flush=True)
            return _drive(args, workdir, container, hub, container_hub)
    finally:
        rootfs.remove_tree(run_dir)


class ContainerProcesses:
    """The hub, Kore and the labs inside the container, as the host sees them (systemd in
    the container cannot account CPU and memory here: no cgroup controllers delegated)."""

    def __init__(self, init_pid: int):
        self.init = init_pid

    def _matching(self, needle: str) -> list[int]:
        from class_start import _cmdline, _descendants

        return [p for p in _descendants(self.init) if needle in _cmdline(p)]

    def hub(self) -> list[int]:
        return self._matching("bin/jupyterhub -f")

    def cpu(self) -> dict:
        from class_start import _cpu_s

        return {
            "hub": sum(_cpu_s(p) for p in self.hub()),
            "kore": sum(_cpu_s(p) for p in self._matching("-m kore")),
        }

    def lab_rss_mb(self) -> list[float]:
        from class_start import _rss_mb

        return [_rss_mb(p) for p in self._matching("singleuser")]


def _drive(args, workdir: Path, container, hub, container_hub) -> dict:
    from class_start import _QUEUED, _STARTED
    from report import summary

    # LaunchDriver signs launches with the LMS's key from <root>/platform/keys.
    keys_root = Path(tempfile.mkdtemp(prefix="lms-", dir=workdir))
    (keys_root / "platform").symlink_to(container.path(LMS_STATE))
    procs = ContainerProcesses(container.pid)
    cpu_before = procs.cpu()
    load_before = os.getloadavg()
    argv = [
        sys.executable,
        str(Path(__file__).with_name("class_start.py")),
        "--drive",
        f"--hub-url={hub.hub_url}",
        f"--hub-api-port={container_hub.HUB_API_PORT}",
        f"--platform-url={hub.platform_url}",
        f"--platform-root={keys_root}",
        f"--students={args.students}",
        f"--window={args.window:g}",
        f"--timeout={args.timeout:g}",
    ]
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": str(workdir)}
    proc = container.run_in_netns(
        argv, env=env, check=False, timeout=args.window + args.timeout + 120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the class driver failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    drove = json.loads(proc.stdout)
    ok_count = sum(s["ok"] for s in drove["samples"])
    print(f"systemd: {ok_count}/{len(drove['samples'])} labs", flush=True)
    cpu_after = procs.cpu()
    students = drove["samples"]
    ok = [s for s in students if s["ok"]]
    lab_mb = procs.lab_rss_mb()
    journal = container.journal(container_hub.HUB_UNIT, 100_000)
    return {
        "spawner": "AnankeSystemdSpawner (labs: transient units with dynamic users)",
        "students": len(students),
        "ok": len(ok),
        "failed": len(students) - len(ok),
        "errors": sorted({e for s in students for e in s["errors"]}),
        "click_to_lab_ms": summary([s["ready_ms"] for s in ok]),
        "login_ms": summary([s["login_ms"] for s in students if s["login_ms"] is not None]),
        "spawn_request_ms": summary(
            [s["spawn_request_ms"] for s in students if s["spawn_request_ms"] is not None]
        ),
        "hub_start_ms": summary([float(m["s"]) * 1000 for m in _STARTED.finditer(journal)]),
        "queue_wait_ms": summary([float(m["s"]) * 1000 for m in _QUEUED.finditer(journal)]),
        # From /proc on the host, as class_start.py's local variant measures them.
        "cpu_s": {k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_after},
        "labs_running": len(lab_mb),
        "lab_rss_mb": summary(lab_mb),  # RSS of each jupyterhub-singleuser process
        "hub_health_ms": drove["hub_health_ms"],
        "wall_s": drove["wall_s"],
        "loadavg_before": [round(x, 2) for x in load_before],
        "samples": students,
    }
