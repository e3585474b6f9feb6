"""jupyter-fs in a lab: the shared folders the hub's admin configured.

The spawner puts this directory first on JUPYTER_CONFIG_PATH only when
``c.LabEnvironment.shared_folders`` is set, and passes the folders in
ANANKE_SHARED_FOLDERS (a JSON list of {"name", "path"}, validated by the hub).
The JSON config next to this file turns the jupyter-fs server extension on (Jupyter
Server reads extensions from ``jupyter_server_config.d``, other settings from here).
"""

import json
import os
from pathlib import Path

c = get_config()  # noqa: F821

# jupyter-fs's contents manager: the home stays the root, each folder is a drive.
c.ServerApp.contents_manager_class = "jupyterfs.metamanager.MetaManager"
# Users cannot mount resources of their own: an fsspec URL can reach the network.
c.JupyterFs.allow_user_resources = False
c.JupyterFs.surface_init_errors = True

folders = json.loads(os.environ.get("ANANKE_SHARED_FOLDERS") or "[]")
c.JupyterFs.resources = [
    {
        "name": folder["name"],
        # fsspec's local file system; "auth": "none" as there are no credentials to ask.
        "url": Path(folder["path"]).as_uri(),
        "type": "fsspec",
        "auth": "none",
    }
    for folder in folders
]
