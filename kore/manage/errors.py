"""The course manager's errors: what went wrong, for a person, with an HTTP status.

The manager raises these; only Kore's handlers turn them into HTTP answers (``.status``
and the message). Bad input is a 4xx, never a 5xx.
"""


class ManageError(Exception):
    """A course-management request that cannot be done; ``str(exc)`` says what to do."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(ManageError):
    """The request names something that cannot be (a bad id, an unknown choice)."""

    status = 400


class NotFound(ManageError):
    """The course, backup, assignment or notebook does not exist (or not for the caller)."""

    status = 404


class Conflict(ManageError):
    """It exists and overwriting was not asked for, or an operation already runs."""

    status = 409


class TooLarge(ManageError):
    """A backup would be bigger than the administrators allow (c.CourseManager.max_backup_bytes)."""

    # RFC 4918 11.5 "Insufficient Storage": the server cannot store what the request needs.
    status = 507


class Unavailable(ManageError):
    """Something the operation needs is down or full (the hub API, the disk): try later."""

    status = 503


def audited(exc: ManageError) -> ManageError:
    """Mark a refusal the manager already wrote to the audit log (handlers skip it)."""
    exc.audited = True
    return exc
