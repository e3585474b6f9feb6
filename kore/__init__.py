"""Kore: Ananke's course and grade service.

A tornado application that the hub starts as a managed service (``python -m kore``)
and reaches at ``/services/kore/``. It publishes the tool's public keys (the keyset URL
the LMS knows) and, for logged-in hub users, the course and grade pages.
"""
