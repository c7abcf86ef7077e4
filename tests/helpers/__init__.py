"""Helpers shared by the test modules (tests/ is on ``sys.path``, see tests/conftest.py)."""
