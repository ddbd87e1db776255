"""Collectors: what tpdump gathers from nodes and from the auth API."""
