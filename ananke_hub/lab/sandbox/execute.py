"""nbgrader's executor with its kernels in the sandbox, chosen through configuration.

nbgrader's ``Execute`` preprocessor is an nbclient ``NotebookClient`` that always passes
``kernel_manager_class=AsyncKernelManager`` (so ``c.Execute.kernel_manager_class`` has
no effect). :class:`SandboxedExecute` is the same preprocessor with
:class:`SandboxKernelManager`, whose kernel spec names the ``ananke-sandbox`` kernel
provisioner (jupyter_client's ``metadata.kernel_provisioner``). The lab config puts it in
place of ``Execute`` in nbgrader's preprocessor lists (:func:`sandboxed`); nbgrader itself
is not changed.

When the sandbox stops a kernel at a limit, nbclient only sees a dead kernel;
:class:`SandboxedExecute` turns that into :class:`SandboxLimitExceeded`, whose message
nbgrader logs for that one submission (in the formgrader's error dialog and the
command's output) before it goes on with the next.
"""

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbgrader.preprocessors import Execute as NbgraderExecute

# nbgrader's Execute that also accepts HTMLExporter's display_data_priority (no warning).
from ..nbgrader_preprocessors import Execute
from . import records

PROVISIONER_NAME = "ananke-sandbox"


class SandboxLimitExceeded(RuntimeError):
    """A submission's code hit a limit of the sandbox; the message names it."""


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels always start through the ``ananke-sandbox`` provisioner."""

    # Set by the provisioner when it stops the kernel at a limit.
    sandbox_limit_exceeded: str | None = None

    @property
    def kernel_spec(self) -> KernelSpec | None:
        spec = super().kernel_spec
        if (
            spec is None
            or spec.metadata.get("kernel_provisioner", {}).get("provisioner_name")
            == PROVISIONER_NAME
        ):
            return spec
        metadata = dict(spec.metadata)
        metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER_NAME, "config": {}}
        sandboxed = KernelSpec(**{**spec.to_dict(), "metadata": metadata})
        sandboxed.resource_dir = spec.resource_dir
        # Interrupts (nbgrader's per-cell timeout) as a message on the control channel:
        # a signal to the process group would reach bubblewrap, not the kernel in its
        # own session and PID namespace.
        sandboxed.interrupt_mode = "message"
        self._kernel_spec = sandboxed
        return sandboxed


class SandboxedExecute(Execute):
    """nbgrader's ``Execute`` with the kernel in the sandbox."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)

    _sandbox_km: SandboxKernelManager | None = None

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        self._sandbox_km = km
        return km

    def preprocess(self, nb, resources=None, km=None):
        from nbclient.exceptions import DeadKernelError

        self._sandbox_km = None
        try:
            result = super().preprocess(nb, resources, km)
        except Exception as exc:
            limit = getattr(self._sandbox_km, "sandbox_limit_exceeded", None)
            where = (resources or {}).get("metadata", {}).get("path", "this notebook")
            if limit:
                short = f"Autograding was stopped: the student's code {limit} of the sandbox."
            elif isinstance(exc, DeadKernelError):
                short = (
                    "Autograding was stopped: the kernel running the student's code died in "
                    "the sandbox; it may have exceeded its CPU time or memory limit, or crashed."
                )
            else:
                raise
            message = (
                f"{short} ({where}) The other submissions are graded; instructors can raise "
                "the limits in the course's settings in Kore."
            )
            self.log.error("%s", message)
            self._record(resources, short)
            raise SandboxLimitExceeded(message) from exc
        self._record(resources, None)
        return result

    def _record(self, resources, message: str | None) -> None:
        """Tell Kore's grade sync (records.LIMITS_FILE) about this submission, when
        autograding (nbgrader's converter, through its exporter, knows the course
        directory; the resources name the student and the assignment)."""
        nbgrader = (resources or {}).get("nbgrader", {})
        converter = getattr(self.parent, "parent", None)
        coursedir = getattr(converter, "coursedir", None)
        student, assignment = nbgrader.get("student"), nbgrader.get("assignment")
        if coursedir is None or not student or not assignment:
            return
        try:
            records.update(coursedir.root, assignment, student, message)
        except OSError as exc:
            self.log.warning("Could not record the autograding limit for Kore: %s", exc)


def sandboxed(preprocessors: list) -> list:
    """``preprocessors`` with nbgrader's ``Execute`` (class or dotted name) replaced by
    :class:`SandboxedExecute`."""
    names = {"nbgrader.preprocessors.Execute", "nbgrader.preprocessors.execute.Execute"}
    return [
        SandboxedExecute if (p is NbgraderExecute or (isinstance(p, str) and p in names)) else p
        for p in preprocessors
    ]


def sandboxed_autograde_preprocessors() -> list:
    """nbgrader's own ``Autograde.autograde_preprocessors``, in its order, with the
    executor in the sandbox (read from nbgrader, so a new nbgrader's list is kept)."""
    from nbgrader.converters import Autograde

    return sandboxed(Autograde.class_traits()["autograde_preprocessors"].default())
