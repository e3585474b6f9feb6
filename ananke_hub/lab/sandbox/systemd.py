"""The lab's side of the systemd backend: ask the broker (:mod:`.broker`) for a kernel.

The connection to the broker stands for the kernel's process: :class:`BrokerProcess`
gives jupyter_client's provisioner the ``poll``/``wait``/``kill`` of a ``Popen``. Killing
it asks the broker to stop the unit (all its processes) and waits until it has; if the
grader's process dies instead, the connection closes and the broker stops the unit too.
"""

import json
import os
import signal
import socket
import stat
import threading

from .broker import BROKER_SOCKET
from .bubblewrap import SandboxUnavailable


def broker_available(path: str = BROKER_SOCKET) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


class BrokerProcess:
    """One kernel run by the broker, seen as a process."""

    pid = None
    stdout = stderr = stdin = None

    def __init__(self, conn: socket.socket, unit: str):
        self._conn = conn
        self.unit = unit
        self.returncode: int | None = None
        self.result: str | None = None
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            with self._conn.makefile("rb") as f:
                for line in f:
                    message = json.loads(line)
                    if "exit" in message:
                        self.returncode = message["exit"]
                        self.result = message.get("result")
                        break
        except (OSError, ValueError):
            pass
        finally:
            if self.returncode is None:
                self.returncode = -signal.SIGKILL  # the broker went away
            self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.poll()

    def send_signal(self, signum: int) -> None:
        # Interrupts go as messages (interrupt_mode "message"); any other signal ends it.
        if signum in (signal.SIGKILL, signal.SIGTERM) and not self._done.is_set():
            try:
                self._conn.sendall(b"stop\n")
            except OSError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def close(self) -> None:
        self._conn.close()


def start(request: dict, path: str = BROKER_SOCKET, timeout: float = 60) -> BrokerProcess:
    """Send ``request`` to the broker; the running kernel, or SandboxUnavailable with the
    broker's reason (blocking: call it in a thread)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
        conn.sendall(json.dumps(request).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                break
            line += chunk
        answer = json.loads(line) if line else {"error": "the sandbox broker hung up."}
    except (OSError, ValueError) as exc:
        conn.close()
        raise SandboxUnavailable(f"The sandbox broker at {path} cannot be reached: {exc}.") from None
    if "unit" not in answer:
        conn.close()
        raise SandboxUnavailable(str(answer.get("error", answer)))
    conn.settimeout(None)
    return BrokerProcess(conn, answer["unit"])
