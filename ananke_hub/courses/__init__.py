"""Courses: one nbgrader course per LMS activity (resource link), created at launch."""
