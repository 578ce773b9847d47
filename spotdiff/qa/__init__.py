"""QA stage: score every generated subject group, quarantine failures with reasons, report.

    spotdiff.qa.run.run_qa(gen_dir, out_dir, QaConfig(), progress=True) -> QaStats

Modules: ``measure`` (pure measurements on arrays), ``prepare`` (decode and measure one group),
``identity`` (subject-crop encoders), ``checks`` (the registry of checks), ``duplicates``
(cross-sample checks), ``results`` (what QA decides), ``run`` (the stage and its outputs), ``report``
(markdown, histograms, contact sheets). The ``qa`` params section is ``spotdiff.config.qa``.
"""
