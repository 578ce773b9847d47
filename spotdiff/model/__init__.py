"""The SpotDiff encoder: experts, subject head, losses, feature cache, checkpoints, adapter export.

``encoder.SpotDiffEncoder`` turns backbone features into subject, pose and background features;
``losses`` holds every stage-1 loss term; ``cache`` computes backbone features once per backbone and
shard set; ``checkpoint`` saves and restores model + optimiser state as safetensors; ``data`` streams
groups from WebDataset shards; ``adapter`` is the alignment module and its IP-Adapter export.
"""
