"""A tiny Django project and process helpers for the tests that start real servers."""
