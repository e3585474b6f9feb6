"""`python -m ananke_hub.platform`: run the built-in LTI 1.3 test platform."""

from .app import main

main()
