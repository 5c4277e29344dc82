"""Lakehouse: contract-driven landing -> bronze -> silver -> gold on Delta Lake, run by Dagster.

`lakehouse.core` is the Dagster-free engine (contracts, Delta I/O, validation, masking);
`lakehouse.defs` holds the thin Dagster definitions over it; `lakehouse.definitions` is the
code location the UI and the CLI load.
"""
