# 40_nbgrader.py: nbgrader courses.
#
# Every LMS activity that launches into the hub becomes one nbgrader course, created on
# its first launch. Students exchange assignments through /opt/nbgrader_exchange.

c = get_config()  # noqa

# Directory of nbgrader's exchange, shared by all courses (one subdirectory each), by
# default /opt/nbgrader_exchange. Labs may write there (the spawner adds it to their
# writable paths).
# c.CourseLayout.exchange_root = "/srv/nbgrader_exchange"

# Where the course registry (courses, instructors, students, LMS endpoints) lives. The
# default is a SQLite file in the state directory; PostgreSQL works too:
# c.CourseRegistry.url = "postgresql+psycopg://ananke:secret@db.example.edu/ananke"
