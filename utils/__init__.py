"""Shared utilities: media I/O, audio features, file handling and error types."""
