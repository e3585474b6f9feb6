"""Run inside the container as a grader lab would: one notebook cell through nbgrader's
sandboxed executor; print what the cell saw as JSON on the last line."""

import json
import os
import sys

import nbformat

from ananke_hub.lab.sandbox.execute import SandboxedExecute

CELL = r"""
import json, os, socket
seen = {"uid": os.getuid(), "cwd": os.getcwd(), "files": sorted(os.listdir("."))}
seen["gradebook"] = os.path.exists(os.path.join(HOME, "gradebook.db"))
seen["var_lib"] = os.path.exists("/var/lib/private")
try:
    socket.create_connection(("127.0.0.1", 22), timeout=2)
    seen["tcp"] = "connected"
except OSError as exc:
    seen["tcp"] = type(exc).__name__
print("SEEN " + json.dumps(seen))
"""

home = os.getcwd()
open(os.path.join(home, "gradebook.db"), "w").write("grades")
os.makedirs("autograded/u1/ps1", exist_ok=True)
open("autograded/u1/ps1/data.csv", "w").write("a,b\n")
nb = nbformat.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.cells = [nbformat.v4.new_code_cell(f"HOME = {home!r}\n" + CELL)]
nb, _ = SandboxedExecute(timeout=60).preprocess(
    nb, {"metadata": {"path": os.path.join(home, "autograded/u1/ps1")}}
)
text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
print(json.dumps({"grader_uid": os.getuid(), "outputs": text}))
sys.exit(0)
