"""Kore's web pages for instructors."""

handlers: list[tuple] = []
