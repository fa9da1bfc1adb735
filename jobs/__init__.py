"""Thin command-line jobs over :mod:`engine`."""
