"""The test platform's request handlers, one module per responsibility.

Each module exposes ``ROUTES``, a list of tornado URL specs; the app joins them.
"""
