"""A throwaway PostgreSQL server for tests: initdb into a temp dir, run on a free port."""

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ananke_hub.testlms.demo import free_port


def _bindir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").exists():
            return candidate
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def available() -> str | None:
    """None if a server can be started here, else the reason why not."""
    if _bindir() is None:
        return "PostgreSQL server binaries not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
    return None


@contextmanager
def postgres_server():
    """Yield a SQLAlchemy URL of a fresh database; stop the server and remove it afterwards."""
    bindir = _bindir()
    # Not under pytest's tmp_path: its root-only parents would lock the postgres user out.
    tmp = Path(tempfile.mkdtemp(prefix="ananke-pg-"))
    data = tmp / "pgdata"
    sockets = tmp / "pgsock"
    data.mkdir()
    sockets.mkdir()
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        user = "postgres"
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        for path in (tmp, data, sockets):
            os.chown(path, uid, gid)
    port = free_port()
    run = {"check": True, "capture_output": True, "user": user}
    subprocess.run(
        [bindir / "initdb", "-D", data, "-U", "ananke", "--auth=trust", "-E", "UTF8"], **run
    )
    server = subprocess.Popen(
        [bindir / "postgres", "-D", data, "-p", str(port), "-k", sockets, "-h", "127.0.0.1"],
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.2)
        subprocess.run(
            [bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "ananke", "ananke"],
            **run,
        )
        yield f"postgresql+psycopg://ananke@127.0.0.1:{port}/ananke"
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
