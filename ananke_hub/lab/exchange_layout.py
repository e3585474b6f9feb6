"""The exchange's modes and the student uids file, shared by the labs' exchange plugins
(:mod:`.exchange`) and the hub, which creates the exchange directories
(:mod:`ananke_hub.courses.nbgrader_setup`).

Apart from :mod:`.exchange` so that the hub and Kore get them without importing nbgrader
(seconds at start). The table of who may do what is in :mod:`.exchange`'s docstring.
"""

# Modes, see the table in exchange.py.
EXCHANGE_ROOT_MODE = 0o755
COURSE_MODE = 0o755
OUTBOUND_MODE = 0o755
INBOUND_MODE = 0o3733
FEEDBACK_MODE = 0o711
# setgid is asked for, but the kernel drops it when the student is not in the grader's
# group (chmod(2)); all files are created before the mode is set, so it does not matter.
SUBMISSION_DIR_MODE = 0o2770
SUBMISSION_FILE_MODE = 0o640
# In the grader's home (0700): the formgrader and autograde read them as the grader.
COLLECTED_DIR_MODE = 0o755
COLLECTED_FILE_MODE = 0o644

#: Where the hub records students' uids, relative to the course directory.
STUDENT_UIDS_FILE = ".ananke/student_uids.json"
