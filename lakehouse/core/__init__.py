"""The Dagster-free core: contracts, landing, Delta I/O, validation, masking, seeding.

Nothing here imports Dagster, so every step can be tested and scripted without an instance.
"""
