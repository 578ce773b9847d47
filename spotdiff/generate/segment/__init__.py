"""Subject segmentation of photos: a registry of backends (``registry``), each ``photo -> Segmentation``.

Backends register themselves by name (``alpha``, ``grabcut``, ``mediapipe``, ``sam``); ``auto`` picks
one per photo. Adding a backend is one module and one ``register`` call, never an if/elif over names.
Importing this package registers every backend module below, and ``quality``: the mask-quality score that
``segment`` gives every mask, whatever the backend (``colour`` holds the colour models it and ``grabcut``
share). ``spotdiff.generate.photo_sheet`` draws photo | cut-out | outline sheets of a photo source.
"""

from spotdiff.generate.segment import alpha, grabcut, mediapipe_selfie, quality, sam  # noqa: F401 -- each registers itself
from spotdiff.generate.segment.registry import (GIVEN_MASKS, PERSON_CLASSES, Segmentation, Segmenter, _instances, _REGISTRY,  # noqa: F401
                                                choose, get, passes, register, segment)
