# 40_nbgrader.py: nbgrader courses.
#
# Every LMS activity that launches into the hub becomes one nbgrader course, created on
# its first launch. Students exchange assignments through /opt/nbgrader_exchange.

c = get_config()  # noqa

# Directory of nbgrader's exchange, shared by all courses (one subdirectory each). It
# must be writable by the labs, hence it is listed in the spawner's readwrite_paths.
c.AnankeSystemdSpawner.exchange_root = "/opt/nbgrader_exchange"
