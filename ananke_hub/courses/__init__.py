"""Courses: one nbgrader course per LMS activity (resource link), created at launch.

Runs in the hub process (provisioning at launch); Kore imports the registry, the layout,
the settings and the hub's tables (:mod:`.models`) too, so nothing here imports the
spawner, systemdspawner, or nbgrader at import time (:mod:`.nbgrader_setup` imports
nbgrader in a thread). Never imports :mod:`kore`; Kore's own tables are in
:mod:`kore.models`.
"""
