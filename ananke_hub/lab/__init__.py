"""Code that runs inside the labs (JupyterLab servers), not in the hub.

- :mod:`.extension`: Ananke's Jupyter server extension (nbgrader's Courses list from
  Kore, the ``ananke/kore`` route of the Kore menu); :mod:`.formgrader` the formgrader's
  folder links.
- :mod:`.exchange`: the private nbgrader exchange's plugins, imported by nbgrader.
- :mod:`.sandbox`: autograding in a sandbox (the grader account's lab).
- ``jupyter/``: the labs' Jupyter config directory (``nbgrader_config.py``, the server
  extension's switch, the prebuilt Kore menu); ``jupyter_lab_kinds/``: per kind of lab.

Runs in labs, as the lab's user. May import jupyter_server, nbgrader, the standard
library and :mod:`ananke_hub.fsutil` (safe file work, shared by every process, standard
library only); never the hub's other modules or :mod:`kore` (a lab has no business with
the hub's state). The hub and Kore import only constants from here (:mod:`.exchange_layout`,
:mod:`.sandbox`'s names); this file imports nothing, so that costs nothing.
"""
