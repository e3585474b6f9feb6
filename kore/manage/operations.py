"""The journaled engine of course operations: backup, reset, delete and import run in the
background, one per course at a time, each as numbered steps.

The step reached is saved after each step; a reset or delete that a crash or a failing
step stopped is finished by running it again (:meth:`Operations.resume_unfinished` at
Kore's start does it for crashed ones). A backup or an import is not resumed: a starting
Kore marks the ones its predecessor left running "interrupted"
(:meth:`Operations.interrupt_predecessor`).

Async, on Kore's event loop; each step's file work is done by the blocking
:class:`~.course_files.CourseFiles` in a thread.
"""

import asyncio
from collections.abc import Awaitable, Callable

from ananke_hub.courses.layout import grader_username
from ananke_hub.courses.models import COURSE_DELETING, iso
from ananke_hub.courses.provision import learner_group, staff_group
from kore.models import CourseOperation

from .backups import KORE_ACTOR
from .context import ManageService
from .errors import Conflict, InvalidRequest, ManageError, NotFound, Unavailable, audited
from .hubapi import HubAdmin
from .names import new_backup_id
from .store import FAILED, FINISHED, RUNNING, OperationRunning

RESET_STEPS = ("backup", "gradebook", "course files", "exchange", "hub group", "registry")
DELETE_STEPS = (
    "backup",
    "mark deleting",
    "grader account",
    "hub groups",
    "files",
    "registry",
)
IMPORT_STEPS = ("import",)
STEPS = {
    "reset": RESET_STEPS,
    "delete": DELETE_STEPS,
    "backup": ("backup",),
    "import": IMPORT_STEPS,
}
KINDS = tuple(STEPS)
#: Kinds started through :meth:`Operations.start` without options.
PLAIN_KINDS = ("backup", "reset", "delete")
INTERRUPTED_MESSAGES = {
    "backup": "Kore stopped while this backup ran; nothing was kept. Make a new backup.",
    "import": (
        "Kore stopped while this import ran. What it had copied is in place; a half-copied "
        "assignment was not put in place. Look at the course's source/ and run the import "
        "again (with overwrite to replace what arrived; replaced versions are kept in "
        ".ananke/replaced/)."
    ),
}
INTERRUPTED_MESSAGE = INTERRUPTED_MESSAGES["backup"]


def operation_entry(operation: CourseOperation, result: dict | None = None) -> dict:
    entry = {
        "operation_id": operation.id,
        "course_id": operation.course_id,
        "kind": operation.kind,
        "state": operation.state,
        "step": operation.step,
        "steps": list(STEPS.get(operation.kind, ())),
        "backup_id": operation.backup_id,
        "started_by": operation.started_by,
        "started_at": iso(operation.started_at),
        "finished_at": iso(operation.finished_at),
        "message": operation.message,
    }
    if operation.kind == "import":
        entry["result"] = operation.result if operation.result is not None else result
    return entry


class Operations(ManageService):
    """Runs backups, resets, deletions and imports as journaled background operations."""

    def __init__(self, manager):
        super().__init__(manager)
        #: Operations this process is running (a second request for one gets Conflict).
        self._active: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        #: The work of imports this process runs, by operation id (not persisted: an
        #: import is not resumed after a crash).
        self._imports: dict[str, Callable[[], Awaitable[dict]]] = {}
        self._results: dict[str, dict] = {}

    async def start_import(
        self, course_id: str, actor: str, work: Callable[[], Awaitable[dict]], target: dict
    ) -> dict:
        """Run an import (``work``, checked by the importer) as a background operation; its
        entry (state "running"). Conflict (with ``operation_id``) while another operation
        runs on the course."""
        running = await self._db(
            lambda: self.store.unfinished(course_id=course_id, states=(RUNNING,), kinds=KINDS)
        )
        for op in running:
            await self.record(
                actor,
                "course.import",
                course_id,
                {"operation_id": op.id, **target},
                "refused",
                f"a {op.kind} is running",
            )
            raise audited(self._running(course_id, op.kind, op.id, op.started_by))
        try:
            op = await self._db(self.store.start_operation, course_id, "import", actor, "")
        except OperationRunning as exc:
            raise self._running(course_id, "operation", exc.operation_id) from exc
        self._imports[op.id] = work
        self.log.info("course:%s user:%s import started (%s)", course_id, actor, op.id)
        await self.record(
            actor, "course.import", course_id, {"operation_id": op.id, **target}, "started"
        )
        return await self._launch(op, actor, wait=False)

    async def reset(self, course_id: str, actor: str) -> dict:
        """Reset a course for a new semester (backup first); the operation's entry.

        Runs to its end (or to a failing step: state "failed", ``message`` says why;
        running it again goes on from there). Raises NotFound, Conflict, TooLarge.
        """
        return await self._operate(self._course_id(course_id), "reset", actor)

    async def delete(self, course_id: str, actor: str) -> dict:
        """Delete a course (backup first); the operation's entry (see :meth:`reset`)."""
        return await self._operate(self._course_id(course_id), "delete", actor)

    async def start(self, kind: str, course_id: str, actor: str) -> dict:
        """Start a backup, reset or delete in the background; its entry (state "running").

        Refusals come before anything starts: NotFound, TooLarge, and Conflict (with
        ``operation_id``, the running one's) while another operation runs on the course.
        """
        if kind not in PLAIN_KINDS:
            raise InvalidRequest(
                f"An operation is one of {', '.join(PLAIN_KINDS)}, not {kind!r} (imports "
                "start with their options: CourseManager.start_import)."
            )
        return await self._operate(self._course_id(course_id), kind, actor, wait=False)

    async def operation(self, course_id: str, operation_id: str) -> dict:
        """One operation of a course; NotFound for an unknown id or another course's."""
        course_id = self._course_id(course_id)
        op = await self._db(self.store.operation, str(operation_id)[:64])
        if op is None or op.course_id != course_id:
            raise NotFound(
                f"Course {course_id} has no operation {operation_id}. Take the id from the "
                "course's operations."
            )
        return operation_entry(op)

    async def interrupt_predecessor(self) -> list[str]:
        """At Kore's start, before it serves: backups and imports the previous Kore left
        running died with it. Say so (state "interrupted") so that a new one can start; resets and
        deletions stay running and :meth:`resume_unfinished` finishes them."""
        ops = await self._db(self.store.interrupt_unresumable, INTERRUPTED_MESSAGES)
        for op in ops:
            if op.kind == "backup" and op.backup_id:
                # What it wrote lies under a temporary name (the archive is renamed only
                # when complete): remove it, the disk is not to fill up with dead halves.
                await self._backup_files.remove_partials(op.backup_id)
            self.log.warning(
                "course:%s %s %s of the previous Kore marked interrupted",
                op.course_id,
                op.kind,
                op.id,
            )
            await self._record_operation(KORE_ACTOR, op, "failed", op.message)
        return [op.id for op in ops]

    async def _record_operation(
        self, actor: str, op: CourseOperation, outcome: str, message: str = "", **target
    ) -> None:
        """The audit event of ``op``: action ``course.<kind>``, the operation and its
        backup (and ``target``'s other facts) as the target."""
        await self.record(
            actor,
            f"course.{op.kind}",
            op.course_id,
            {"operation_id": op.id, "backup_id": op.backup_id, **target},
            outcome,
            message,
        )

    async def operations(self, course_id: str, limit: int = 50) -> list[dict]:
        course_id = self._course_id(course_id)
        ops = await self._db(self.store.operations, course_id, max(1, min(int(limit), 500)))
        return [operation_entry(op) for op in ops]

    def _running(self, course_id: str, kind: str, op_id: str, who: str = "") -> Conflict:
        by = f" started by {who}" if who else ""
        exc = Conflict(
            f"A {kind} of course {course_id}{by} is running (operation {op_id}). Wait for "
            "it to end, then start another."
        )
        exc.operation_id = op_id
        return exc

    async def _operate(self, course_id: str, kind: str, actor: str, wait: bool = True) -> dict:
        unfinished = await self._db(
            lambda: self.store.unfinished(
                course_id=course_id, states=(RUNNING, FAILED), kinds=KINDS
            )
        )
        for op in unfinished:
            if op.state == RUNNING:
                await self.record(
                    actor,
                    f"course.{kind}",
                    course_id,
                    {"operation_id": op.id},
                    "refused",
                    f"a {op.kind} is running",
                )
                raise audited(self._running(course_id, op.kind, op.id, op.started_by))
        again = [op for op in unfinished if op.kind == kind and kind != "backup"]
        if again:
            # Run it again: it goes on after its last completed step.
            op = again[-1]
            try:
                op = await self._db(self.store.reopen_operation, op.id)
            except OperationRunning as exc:
                raise self._running(course_id, "operation", exc.operation_id) from exc
            await self._record_operation(actor, op, "started", f"continued after step {op.step}")
            return await self._launch(op, actor, wait)

        facts = await self._course(course_id)
        if facts.state == COURSE_DELETING:
            raise Conflict(
                f"Course {course_id} is being deleted. Run the deletion again to finish it."
            )
        # Refused before anything changes if the backup would be too big.
        await self._backup_files.check_size(self.layout.course(course_id))
        try:
            op = await self._db(self.store.start_operation, course_id, kind, actor, new_backup_id())
        except OperationRunning as exc:
            raise self._running(course_id, "operation", exc.operation_id) from exc
        self.log.info("course:%s user:%s %s started (%s)", course_id, actor, kind, op.id)
        await self._record_operation(actor, op, "started")
        return await self._launch(op, actor, wait)

    async def _launch(self, op: CourseOperation, actor: str, wait: bool = True) -> dict:
        """Run the operation in its own task: a request that goes away does not stop it.

        ``wait``: the finished entry; otherwise the running one at once.
        """
        task = asyncio.create_task(self._run(op, actor), name=f"course-{op.kind}-{op.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not wait:
            return operation_entry(op)
        return await asyncio.shield(task)

    def _steps(self, kind: str) -> list[Callable[[CourseOperation], Awaitable[None]]]:
        if kind == "backup":
            return [self._step_backup]
        if kind == "import":
            return [self._step_import]
        if kind == "reset":
            return [
                self._step_backup,
                self._reset_gradebook,
                self._reset_course_files,
                self._reset_exchange,
                self._reset_hub_group,
                self._reset_registry,
            ]
        return [
            self._step_backup,
            self._delete_mark,
            self._delete_grader,
            self._delete_groups,
            self._delete_files,
            self._delete_registry,
        ]

    async def _run(self, op: CourseOperation, actor: str) -> dict:
        if op.id in self._active:
            raise Conflict(f"The {op.kind} of course {op.course_id} is running.")
        self._active.add(op.id)
        prefix = f"course:{op.course_id} user:{actor} {op.kind} {op.id}"
        step = op.step
        names = STEPS[op.kind]
        try:
            for number, work in enumerate(self._steps(op.kind), start=1):
                if number <= step:
                    continue
                await work(op)
                await self._db(self.store.step_done, op.id, number)
                step = number
                self.log.info("%s: step %d (%s) done", prefix, number, names[number - 1])
            result = self._results.pop(op.id, None)
            op = await self._db(self.store.end_operation, op.id, FINISHED, "", result)
            self.log.info("%s finished", prefix)
            if op.kind != "import":  # the importer recorded what it imported
                await self._record_operation(actor, op, "ok")
        except Exception as exc:
            failed = step + 1
            if isinstance(exc, ManageError):
                why = exc.message
                self.log.warning("%s: step %d failed: %s", prefix, failed, why)
            else:
                why = f"an unexpected error ({type(exc).__name__}; details in Kore's log)"
                self.log.exception("%s: step %d failed", prefix, failed)
            if op.kind == "backup":
                message = f"The backup failed: {why} Nothing was kept; make a new backup."
            elif op.kind == "import":
                message = (
                    f"The import failed: {why} What failed was not put in place; start the "
                    "import again when the cause is fixed."
                )
            else:
                message = (
                    f"Step {failed} of {len(names)} ({names[failed - 1]}) failed: {why} "
                    f"Run the {op.kind} again to go on from there; the backup "
                    f"{op.backup_id} was {'made' if step >= 1 else 'not made yet'}."
                )
            op = await self._db(self.store.end_operation, op.id, FAILED, message)
            if op.kind != "import":  # the importer recorded the refusal or failure
                await self._record_operation(actor, op, "failed", message, step=failed)
        finally:
            self._active.discard(op.id)
            self._imports.pop(op.id, None)
            self._results.pop(op.id, None)
        return operation_entry(op)

    async def resume_unfinished(self) -> list[dict]:
        """At Kore's start: finish the resets and deletes a crash interrupted."""
        done = []
        for op in await self._db(self.store.unfinished):
            if op.id in self._active:
                continue
            self.log.warning(
                "course:%s %s %s was interrupted after step %d: finishing it",
                op.course_id,
                op.kind,
                op.id,
                op.step,
            )
            await self._record_operation(
                KORE_ACTOR,
                op,
                "started",
                f"resumed after step {op.step} (started by {op.started_by})",
            )
            done.append(await self._launch(op, op.started_by or KORE_ACTOR))
        return done

    async def aclose(self) -> None:
        """At Kore's shutdown: stop running operations (they are resumed at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _step_backup(self, op: CourseOperation) -> None:
        if await self._db(self.store.backup, op.backup_id) is not None:
            return
        facts = await self._course(op.course_id)
        reason = {"backup": "manual", "reset": "before-reset"}.get(op.kind, "before-delete")
        await self.manager.backups.make_backup(facts, op.backup_id, op.started_by, reason)

    async def _step_import(self, op: CourseOperation) -> None:
        work = self._imports.get(op.id)
        if work is None:  # imports are not resumed; a re-run of a failed one starts anew
            raise Unavailable("This import's options are gone. Start the import again.")
        self._results[op.id] = await work()

    async def _reset_gradebook(self, op: CourseOperation) -> None:
        paths = self.layout.course(op.course_id)
        removed = await self._course_files.remove_students_from_gradebook(paths)
        if removed is not None:
            self.log.info(
                "course:%s reset: %d students left the gradebook", op.course_id, len(removed)
            )

    async def _reset_course_files(self, op: CourseOperation) -> None:
        await self._course_files.remove_student_files(self.layout.course(op.course_id))

    async def _reset_exchange(self, op: CourseOperation) -> None:
        await self._course_files.clear_exchange(self.layout.course(op.course_id))

    def _hub(self) -> HubAdmin:
        if self.hub is None:
            raise Unavailable(
                "Kore has no hub API token, so it cannot change the hub's users and "
                "groups. Let the hub start Kore (it gives Kore its token)."
            )
        return self.hub

    async def _reset_hub_group(self, op: CourseOperation) -> None:
        left = await self._hub().empty_group(learner_group(op.course_id))
        self.log.info("course:%s reset: %d learners left the group", op.course_id, len(left))

    async def _reset_registry(self, op: CourseOperation) -> None:
        await self._db(self.store.forget_learners, op.course_id)

    async def _delete_mark(self, op: CourseOperation) -> None:
        await self._db(self.store.set_course_state, op.course_id, COURSE_DELETING)

    async def _delete_grader(self, op: CourseOperation) -> None:
        await self._hub().delete_user(grader_username(op.course_id))

    async def _delete_groups(self, op: CourseOperation) -> None:
        hub = self._hub()
        for group in (learner_group(op.course_id), staff_group(op.course_id)):
            await hub.delete_group(group)
        # The members are still in the registry (step 6 removes them); a course that is
        # being deleted gives nobody anything (provision.current_memberships).
        members = [m.username for m in await self._db(self.registry.members, op.course_id)]
        applied = await hub.apply_course_access(members)
        failed = [a for a in applied.values() if a.problem]
        if failed:
            raise Unavailable(
                f"The hub did not take the course's roles from {len(failed)} member(s): "
                f"{failed[0].problem}"
            )

    async def _delete_files(self, op: CourseOperation) -> None:
        await self._course_files.remove_course_files(self.layout.course(op.course_id))

    async def _delete_registry(self, op: CourseOperation) -> None:
        await self._db(self.store.delete_course, op.course_id)
