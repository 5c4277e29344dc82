"""Thin Dagster definitions over `lakehouse.core`: assets, checks, sensors, resources.

Nothing here computes data; each definition calls the core and reports what it did.
"""
