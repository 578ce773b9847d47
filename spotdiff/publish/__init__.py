"""``publish`` stage: the release tar and its dataset card (``run``, ``card``), checking a release
(``verify``), and scheduled retraining's publish decision (``retrain``)."""
