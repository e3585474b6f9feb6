"""``python -m kore``: how the hub starts Kore."""

from .app import main

if __name__ == "__main__":
    main()
