"""`python -m ananke_hub.testlms`: run the built-in LTI 1.3 test platform."""

from .app import main

main()
