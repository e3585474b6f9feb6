"""Blocking work kept off Kore's event loop by construction, not by naming.

The blocking halves of course management (:class:`~.backups.BackupFiles`,
:class:`~.course_files.CourseFiles`, :class:`~.importer_files.ImportFiles`) mark each
method :func:`blocking`: called on a thread that runs an event loop, it raises
:class:`BlockingCallInLoop` instead of stalling every request. The async services hold
them only wrapped in :class:`InThread`, whose methods are coroutines that run the work in
a thread; a forgotten ``await`` leaves a coroutine unawaited (Python warns) and blocks
nothing.
"""

import asyncio
import errno
import functools

from .errors import Unavailable


class BlockingCallInLoop(RuntimeError):
    """A blocking method was called on the event loop's thread (a bug in Kore)."""


def blocking(func):
    """Mark ``func`` as blocking: it refuses to run on a thread with a running loop."""

    @functools.wraps(func)
    def guarded(*args, **kwargs):
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop on this thread: a worker thread, fine
            return func(*args, **kwargs)
        raise BlockingCallInLoop(
            f"{func.__qualname__} does blocking file work and was called on the event "
            "loop's thread; call it through InThread (await)."
        )

    guarded.blocking = True
    return guarded


async def in_thread(func, /, *args, **kwargs):
    """``func(*args, **kwargs)`` run in a thread; a full disk becomes
    :class:`~.errors.Unavailable` with words for the instructor."""
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise Unavailable(
                "The hub's disk is full. Ask the hub's administrators to free space "
                "(old backups, for example), then try again."
            ) from exc
        raise


class InThread:
    """The async face of a blocking object: ``await InThread(obj).method(...)`` runs
    ``obj.method(...)`` in a thread (:func:`in_thread`)."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        method = getattr(self._target, name)
        if not callable(method):
            return method

        async def call(*args, **kwargs):
            return await in_thread(method, *args, **kwargs)

        call.__name__ = name
        return call
