"""Subject sources: where subjects come from, and how each yields its two subject layers.

A source turns a share of ``generate.n_groups`` into ``Job``s (``plan``), then builds each job's anchor
layer and pose layer (``layers``); the types and the registry are in ``registry``. Compositing onto
backgrounds is common to every source and lives in ``spotdiff.generate.run``. Importing this package
registers every source module below.
"""

from spotdiff.generate.sources import diffusion, photos, procedural_source  # noqa: F401 -- each registers itself
from spotdiff.generate.sources.registry import Job, Source, SubjectLayers, get, register  # noqa: F401
