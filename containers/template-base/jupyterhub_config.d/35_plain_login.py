# 35_plain_login.py: the ananke-base image has no nbgrader, so no courses.
#
# Launches from the LMS log users in (LTI 1.3) and start their labs; no course is
# created, and the hub's groups and roles stay as the admin sets them. Use the
# ananke-nbgrader image and its template (containers/template-nbgrader) for courses.

c = get_config()  # noqa

c.AnankeLTI13Authenticator.provision_courses = False
