"""Ananke: a JupyterHub distribution for teaching.

This package runs inside the hub process (authenticator, spawner, config loading)
and holds the ``ananke`` command line tool.
"""

__version__ = "0.1.0.dev0"
