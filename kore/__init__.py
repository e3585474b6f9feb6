"""Kore: Ananke's course and grade service.

Runs in its own process, started by the hub. May import the hub package's shared pieces
(config fragments, registry, course layout and settings, key store, paths) but not the
hub's runtime: importing :mod:`kore.app` imports neither the spawner, systemdspawner nor
nbgrader (nbgrader is imported in a thread when a gradebook is read;
tests/test_layout.py checks it). :mod:`kore.cli` is the one module the ``ananke`` command
imports.

A tornado application that the hub starts as a managed service (``python -m kore``)
and reaches at ``/services/kore/``. It publishes the tool's public keys (the keyset URL
the LMS knows) and, for logged-in hub users, the course and grade pages.
"""
