"""Kore's LMS syncs: grades out through AGS (:mod:`.grades`), rosters in through NRPS
(:mod:`.roster`), run as jobs with results in the course registry (:mod:`.job`,
:mod:`.store`).

Runs in Kore and in the ``ananke grades|roster sync`` commands (through :mod:`kore.cli`);
imports the hub package's registry and layout, never the hub's runtime.
"""
