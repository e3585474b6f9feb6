"""Course management: backups, reset, delete and import of courses.

Runs in Kore: async services on Kore's event loop, their blocking file work in threads
(separate objects, see :mod:`.service`). Imports the hub package's registry, layout and
settings, never the hub's runtime.

Kore's course-management API (:mod:`kore.handlers.manage`) calls the
:class:`~kore.manage.service.CourseManager`; the file work is in
:mod:`ananke_hub.fsutil` and :mod:`.archive`, the records (backups, operations, audit events) in :mod:`.store`.
"""
