"""Test-only routes (``--test-api``): what arrived, and a clean slate. Not LTI.

- ``GET /_test/scores.json`` -> ``{"context", "lineitems": [line item + "deleted"],
  "posts": [{"lineitem", "label", "userId", "accepted", "refused": {"404": 1}, "last"}]}``:
  every line item (deleted ones too) and how often each user's score for each was
  accepted or refused, with the last accepted score.
- ``POST /_test/reset`` -> 204: only the activities' own line items again, no scores, an
  empty tally. Access tokens stay valid; the library's cached tool keyset stays.

Anyone who can reach the platform can use these: tests only, never the demo.
"""

from .service_handlers import JSONHandler


class ScoresJSON(JSONHandler):
    def get(self):
        self.set_header("Cache-Control", "no-store")
        self.send_json(200, self.settings["platform_store"].scores_document())


class Reset(JSONHandler):
    def post(self):
        self.settings["platform_store"].reset()
        self.set_status(204)
        self.finish()


ROUTES = [
    (r"/_test/scores\.json", ScoresJSON),
    (r"/_test/reset", Reset),
]
