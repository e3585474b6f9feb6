# nbgrader settings of every Ananke lab: students', instructors' and grader accounts'.
#
# The spawner puts this directory first on JUPYTER_CONFIG_PATH and sets
# ANANKE_EXCHANGE_ROOT; JupyterHub sets JUPYTERHUB_USER. A course's own settings are in
# nbgrader_config.json in its course directory (the grader account's home), which
# nbgrader reads after this file.

import os

from ananke_hub.lab.exchange import EXCHANGE_PLUGINS, lab_student_id

c = get_config()  # noqa: F821

# One exchange for all courses, each in its own subdirectory (path_includes_course also
# puts fetched assignments in <course>/<assignment> in students' homes). Dynamic users
# cannot reach /home, hence /opt (the seed's "Nbgrader exchange directory").
c.Exchange.root = os.environ.get("ANANKE_EXCHANGE_ROOT") or "/opt/nbgrader_exchange"
c.Exchange.path_includes_course = True

# Courses come from the hub's groups: nbgrader-<course> (students) and
# formgrade-<course> (instructors and TAs), which the hub keeps at every launch.
c.Authenticator.plugin_class = "nbgrader.auth.JupyterHubAuthPlugin"

# The private exchange: students cannot list, read or change each other's submissions
# (ananke_hub/lab/exchange.py).
for _trait, _plugin in EXCHANGE_PLUGINS.items():
    setattr(c.ExchangeFactory, _trait, f"{_plugin.__module__}.{_plugin.__name__}")

# The student id is the hub user name, whatever the OS user of the lab is called, so
# submissions carry the name the gradebook knows. Grader accounts keep nbgrader's
# default ("*": all students) for collect and autograde.
_student_id = lab_student_id(os.environ)
if _student_id:
    c.CourseDirectory.student_id = _student_id

# Autograding runs each submission's kernel in a sandbox (ananke_hub/lab/sandbox): no
# gradebook, no other submissions, no network, with limits. The per-course limits are in
# the course's nbgrader_config.json (c.SandboxProvisioner, set in Kore).
from ananke_hub.lab.sandbox.execute import sandboxed_autograde_preprocessors  # noqa: E402

c.Autograde.autograde_preprocessors = sandboxed_autograde_preprocessors()

# The formgrader's and the lab's Validate button in a grader account's lab run student
# code too. nbgrader's Validator has a fixed preprocessor list (nbgrader/validator.py,
# Validator.preprocessors is not config=True) and its Execute forces its kernel manager
# (preprocessors/execute.py), but Execute takes nbclient's kernel_name from config: the
# "ananke-sandbox" kernel spec (lab/jupyter_lab_kinds/grader/kernels, on the grader
# account's JUPYTER_PATH only: spawner.lab_jupyter_path) names the sandbox's kernel
# provisioner. Students' own labs validate their own code as usual.
from ananke_hub.lab.exchange import GRADER_ACCOUNT_RE  # noqa: E402

if GRADER_ACCOUNT_RE.fullmatch(os.environ.get("JUPYTERHUB_USER", "")):
    c.Execute.kernel_name = "ananke-sandbox"
