"""``shard`` stage: WebDataset tars split by subject (``run``)."""
