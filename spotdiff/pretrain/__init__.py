"""Stage ``pretrain``: self-supervised pre-training of the embedded backbone (``run.py``) on a procedural pool
(``pool.py``)."""
