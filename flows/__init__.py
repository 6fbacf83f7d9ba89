"""Prefect flows of clip-icm: each one reads like a step of the method."""
