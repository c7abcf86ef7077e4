"""Cryptography built from ``cryptography``'s primitives: the age v1 file format (``age``)."""
