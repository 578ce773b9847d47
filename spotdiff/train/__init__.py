"""``train`` stage: the SpotDiff encoder, stage 1 and optional stage 2 (``run``); the model is in ``spotdiff.model``."""
