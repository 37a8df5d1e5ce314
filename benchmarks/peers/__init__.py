"""Tiny peer listers, run by path with the tools venv's Python (``.bench/tools-venv``).

Each one is what a user of that library would write: the library's own paginator or list call,
every key written to the file named by the last argument, one key a line, and ``N requests`` on
standard error when the library lets us count pages.
"""
