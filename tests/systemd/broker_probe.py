"""Run inside the container as some user: send the sandbox broker requests that try to
break in, and one good one; print each answer as JSON on the last line.

argv: "grader" (the caller is a grader account: try its scratch area) or "other".
"""

import json
import os
import socket
import sys
from pathlib import Path

from ananke_hub.lab.sandbox.broker import BROKER_SOCKET


def ask(request) -> dict:
    # The broker removes a scratch directory after its kernel: one for every request.
    good_dir.mkdir(exist_ok=True)
    good_dir.chmod(0o777)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(BROKER_SOCKET)
    conn.sendall(json.dumps(request).encode() + b"\n")
    answer = json.loads(conn.makefile("rb").readline())
    if "unit" in answer:
        conn.sendall(b"stop\n")
        answer["end"] = json.loads(conn.makefile("rb").readline())
    conn.close()
    return answer


home = Path(os.getcwd()).resolve()
area = home / ".ananke-sandbox"
area.mkdir(mode=0o700, exist_ok=True)
good_dir = area / "ananke-sandbox-good1"
(area / "ananke-sandbox-link1").unlink(missing_ok=True)
(area / "ananke-sandbox-link1").symlink_to("/var/lib/ananke")
limits = {"time_limit": 20, "memory_mb": 512, "cpu_seconds": 60, "tasks_max": 32,
          "disk_mb": 64}
argv = [sys.executable, "-c", "import time; time.sleep(60)"]


def req(**changes):
    base = {"scratch": str(good_dir), "argv": argv, "env": {}, "limits": dict(limits)}
    base.update(changes)
    return base


cases = {
    "outside_area": req(scratch="/tmp"),
    "other_home": req(scratch="/var/lib/private/u100/.ananke-sandbox/ananke-sandbox-abcd"),
    "dotdot": req(scratch=f"{area}/../.ananke-sandbox/ananke-sandbox-good1"),
    "dotdot_out": req(scratch=f"{area}/ananke-sandbox-good1/../../gradebook"),
    "area_itself": req(scratch=str(area)),
    "symlink": req(scratch=str(area / "ananke-sandbox-link1")),
    "over_time": req(limits={**limits, "time_limit": 100000}),
    "over_tasks": req(limits={**limits, "tasks_max": 5000}),
    "over_disk": req(limits={**limits, "disk_mb": 10**6}),
    "negative": req(limits={**limits, "memory_mb": -1}),
    "missing_limit": req(limits={"time_limit": 20}),
    "relative_argv": req(argv=["python3", "-c", "1"]),
    "env_newline": req(env={"A": "x\nExecStartPre=/bin/sh"}),
    "unknown_field": {**req(), "user": "root"},
    "good": req(),  # last: the broker removes the scratch directory after the kernel
}
answers = {k: ask(v) for k, v in cases.items()}
answers["good_scratch_removed"] = not good_dir.exists()
print(json.dumps(answers))
