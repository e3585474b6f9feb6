"""Ananke: a JupyterHub distribution for teaching.

Runs in the hub process: the authenticator (:mod:`.auth`), course provisioning
(:mod:`.courses`), the spawners, config loading, the key store; and on the host as the
``ananke`` command (:mod:`.cli`, :mod:`.container`). Two subpackages run elsewhere: the
labs' code (:mod:`.lab`) and the built-in test LMS (:mod:`.testlms`).

May import: JupyterHub, its authenticator and spawner libraries, SQLAlchemy, traitlets.
Never Kore (:mod:`kore`), except :mod:`kore.cli` from the ``ananke`` command; the hub
imports constants only from :mod:`.lab` (nbgrader is imported in a thread, when a course
is set up). :mod:`.fsutil`, safe file work, runs in every process (the hub, Kore, the
labs) and imports the standard library only.
"""

__version__ = "0.1.0.dev0"
