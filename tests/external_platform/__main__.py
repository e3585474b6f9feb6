"""`python -m external_platform` (with tests/ on PYTHONPATH): run the lti1p3platform stand-in."""

from .app import main

main()
