"""Helpers every stage shares: the group record, images, tars, seeding, worker pool, model files and
weights, the shard folder, factor labels and contact sheets. Nothing here knows a stage."""
