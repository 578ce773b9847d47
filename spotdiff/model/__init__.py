"""The SpotDiff encoder: experts, subject head, losses, feature cache, checkpoints, adapter export.

``encoder.SpotDiffEncoder`` turns backbone features into subject, pose and background features;
``embed`` is the image encoder (backbone) that QA, train and evaluate share; ``losses`` holds every
stage-1 loss term; ``cache`` computes backbone features once per backbone and shard set; ``checkpoint``
saves and restores model + optimiser state as safetensors; ``trained`` reads a train output back as
models; ``adapter`` and ``stage2`` are the alignment module, its training and its IP-Adapter export.
"""
