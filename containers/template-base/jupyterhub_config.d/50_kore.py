# 50_kore.py: Kore, Ananke's course and grade service.
#
# The hub starts Kore itself (python -m kore) and routes <hub>/services/kore/ to it.
# The LMS fetches the tool's public keys from <hub>/services/kore/jwks.

c = get_config()  # noqa

# Port Kore listens on, on 127.0.0.1 only (the hub's proxy is its only client).
c.Kore.port = 10101

# Kore's log level: DEBUG, INFO, WARNING or ERROR.
# c.Kore.log_level = "INFO"

# Grades and rosters (LTI Advantage): the most requests Kore sends the LMS at once (a
# ceiling: below it Kore adapts to how fast the LMS answers, and backs off on 429/503),
# and how long it waits. Lower the ceiling for a small LMS.
# c.LTIAdvantage.concurrency = 64
# c.LTIAdvantage.request_timeout = 30.0
