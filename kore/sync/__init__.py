"""Kore's LMS syncs: grades out through AGS (:mod:`.grades`), rosters in through NRPS
(:mod:`.roster`), run as jobs with results in the course registry (:mod:`.job`)."""
