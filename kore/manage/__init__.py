"""Course management: backups, reset, delete and import of courses, and the audit log.

Kore's course-management API (:mod:`kore.handlers.manage`) calls the
:class:`~kore.manage.service.CourseManager`; the file work is in :mod:`.files` and
:mod:`.archive`, the records (backups, operations, audit events) in :mod:`.store`.
"""
