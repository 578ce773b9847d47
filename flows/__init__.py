"""Thin Prefect flows over the ``spotdiff`` library: one flow per stage, no logic of their own."""
