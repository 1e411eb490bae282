"""Temporal Weaver."""
