"""The fault suite: see conftest.py and harness.py."""
