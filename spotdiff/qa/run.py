"""``qa`` stage: score every generated group, quarantine failures with every reason, report.

Data flow: chunk tars are prepared and scored per sample on worker processes
(``_score_chunk``: decode, measure, embed subject crops, per-sample checks); the parent
then runs the cross-sample checks (duplicates) in generate order, and writes, in ``out``:

* ``scores.parquet``: one row per sample in generate order: key, subject, source, class,
  ``accepted``, ``reasons`` and, per check, ``<check>`` (score), ``<check>_pass`` (null
  where not evaluated: only ``decode`` is judged for a group that does not decode) and
  ``<check>_view`` (the view the score comes from);
* ``quarantine.parquet``: the rejected rows, with ``first_reason``; ``quarantine.tar``:
  their members, byte for byte, so they can be looked at after ``generate`` reruns;
* ``accepted.txt``: accepted keys, one a line, in generate order (what ``shard`` reads);
* ``metrics.json``: samples in / accepted / rejected, rejected per reason (a sample counts
  once under each of its reasons) and per first reason (these sum to ``rejected``), pass
  rate per check; asserted to reconcile before anything is written;
* ``report.md``, ``hist_<check>.png``, ``worst_<check>.png`` (``spotdiff.qa.report``).

Samples listed in ``records.parquet`` but absent from the chunks fail ``decode``: nothing
the generate stage kept is dropped without a row.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spotdiff.qa import checks, duplicates, identity
from spotdiff.config import Params
from spotdiff.config.qa import QaConfig
from spotdiff.qa.identity import EmbedFn
from spotdiff.qa.prepare import Prepared, embed_chunk, prepare
from spotdiff.common.generated import recorded_digests
from spotdiff.common.outputs import reset_dir
from spotdiff.common.tars import digest_mismatch, read_samples, samples_with_keys, write_samples
from spotdiff.qa.results import QaStats, SampleResult
from spotdiff.errors import MissingInputError


_ENCODERS: dict[str, EmbedFn] = {}


def _encoder(cfg: QaConfig) -> EmbedFn:
    """This process's encoder for ``cfg`` (built once per process)."""
    embed = cfg.identity.embed.model_dump() if cfg.identity.embed is not None else None
    key = json.dumps([cfg.identity.encoder, embed], sort_keys=True, default=str)
    if key not in _ENCODERS:
        _ENCODERS[key] = identity.build(cfg.identity.encoder, config=cfg.identity.embed)
    return _ENCODERS[key]


def _chosen_encoder(cfg: QaConfig, embed_fn: EmbedFn | None, embed_config: Any) -> EmbedFn | None:
    """The encoder to run in this process, or None to let workers build the configured one."""
    if embed_fn is not None:
        return embed_fn
    if cfg.identity.encoder == "embed":  # one model, in this process, not one per worker
        if embed_config is not None:
            return identity.build("embed", config=embed_config)
        return _encoder(cfg)
    return None


def _result(s: Prepared, cfg: QaConfig) -> SampleResult:
    rec = s.record
    r = SampleResult(s.key, -1, str(rec.get("subject_id", "")), str(rec.get("source", "")),
                     str(rec.get("class", "")), checks.score_sample(s, cfg), error=s.error, sha256=s.sha256)
    if s.error is None:
        r.phash = np.stack([m.phash for m in s.views.values()])
        r.digests = [m.digest for m in s.views.values()]
    return r


def score_samples(samples: list[tuple[str, dict[str, bytes]]], cfg: QaConfig,
                  embed_fn: EmbedFn | None = None) -> list[SampleResult]:
    """Prepare, embed and score ``(key, members)`` samples: per-sample checks only, ``index``
    left at -1 (the caller knows the generate order)."""
    prepared = [prepare(key, members, cfg) for key, members in samples]
    embed_chunk(prepared, embed_fn or _encoder(cfg))
    return [_result(s, cfg) for s in prepared]


def _score_chunk(args: tuple[str, QaConfig]) -> list[SampleResult]:
    """One chunk tar, in a worker process."""
    path, cfg = args
    return score_samples(list(read_samples(path)), cfg)


def _apply_cross(results: list[SampleResult], cfg: QaConfig) -> None:
    entries = [duplicates.HashEntry(r.subject_id, r.phash, r.digests) for r in results]
    for name, per_sample in duplicates.duplicate_values(entries, cfg.duplicates.min_hash_distance).items():
        check = checks.CHECKS[name]
        for r, values in zip(results, per_sample):
            r.outcomes[name] = None if r.error else checks.evaluate(check, values, cfg)


def _record_keys(gen: Path) -> list[str]:
    return pq.read_table(gen / "records.parquet", columns=["key"]).column("key").to_pylist()


def run_qa(gen_dir: str | Path, out_dir: str | Path, cfg: QaConfig, progress: bool = True,
           embed_fn: EmbedFn | None = None, embed_config: Any = None) -> QaStats:
    """Score every group the generate stage kept in ``gen_dir``; write ``out_dir`` (emptied
    first; see the module docstring).

    ``embed_fn`` overrides the configured identity encoder; ``embed_config`` (params.yaml's
    shared ``embed:`` section, an ``EmbedConfig``) configures the ``embed`` encoder when it is
    chosen. Either way a model encoder runs in this process, chunk by chunk.
    """
    from spotdiff.common.progress import progress_bar

    from spotdiff.common.pool import run_parallel, worker_count

    t0 = time.perf_counter()
    gen, out = Path(gen_dir), Path(out_dir)
    if not (gen / "stats.json").exists():
        raise MissingInputError(f"{gen}/stats.json missing: the generate stage did not finish (run `spotdiff generate`)")
    keys = _record_keys(gen)
    index = {k: i for i, k in enumerate(keys)}
    chunks = sorted((gen / "chunks").glob("chunk-*.tar"))
    in_process = _chosen_encoder(cfg, embed_fn, embed_config)
    if in_process is not None:
        batches = (score_samples(list(read_samples(c)), cfg, in_process) for c in chunks)
    else:
        batches = run_parallel(_score_chunk, [(str(c), cfg) for c in chunks], worker_count(cfg.workers))
    found: dict[str, SampleResult] = {}
    bar = progress_bar(len(keys), unit="group", desc="qa", enabled=progress)
    with contextlib.closing(batches):  # an exception (Ctrl-C) ends the worker pool at once
        for batch in batches:
            for r in batch:
                # Samples generate did not keep are not QA's (shard skips them too); a key repeated
                # in the chunks is judged by its first copy, as shard would ship it.
                if r.key in index and r.key not in found:
                    r.index = index[r.key]
                    found[r.key] = r
            bar.update(len(batch))
    bar.close()
    missing = checks.evaluate(checks.CHECKS["decode"], {"all": 0.0}, cfg)
    expected = recorded_digests(gen)
    for r in found.values():
        # A member whose bytes changed since generate wrote them (a flipped bit decodes quietly) is a decode
        # failure; the group's other scores were measured on damaged bytes, so none of them is judged.
        why = digest_mismatch(expected.get(r.key), r.sha256) if expected else None
        if why:
            r.error, r.outcomes = why, {"decode": missing}
    results = [found.get(k) or SampleResult(k, i, outcomes={"decode": missing}, error="missing from the chunk tars")
               for i, k in enumerate(keys)]
    _apply_cross(results, cfg)

    reset_dir(out)  # a link or mount point is emptied and written through
    stats = _write_outputs(results, gen, out, cfg)
    from spotdiff.qa.report import write_report

    write_report(results, gen, out, cfg, stats)
    stats.seconds = round(time.perf_counter() - t0, 3)
    return stats


def _row(r: SampleResult) -> dict[str, Any]:
    row: dict[str, Any] = {"key": r.key, "index": r.index, "subject_id": r.subject_id, "source": r.source,
                           "class": r.class_name, "accepted": not r.reasons, "reasons": r.reasons,
                           "error": r.error}
    for name in checks.CHECKS:
        o = r.outcomes.get(name)
        row[name] = None if o is None else o.score
        row[f"{name}_pass"] = None if o is None else o.passed
        row[f"{name}_view"] = None if o is None else o.view
    return row


def _schema(first_reason: bool = False) -> pa.Schema:
    fields = [("key", pa.string()), ("index", pa.int64()), ("subject_id", pa.string()), ("source", pa.string()),
              ("class", pa.string()), ("accepted", pa.bool_()), ("reasons", pa.list_(pa.string())),
              ("error", pa.string())]
    if first_reason:
        fields.append(("first_reason", pa.string()))
    for name in checks.CHECKS:
        fields += [(name, pa.float64()), (f"{name}_pass", pa.bool_()), (f"{name}_view", pa.string())]
    return pa.schema(fields)


def metrics(results: list[SampleResult], cfg: QaConfig) -> dict[str, Any]:
    """Counts that reconcile (asserted): in = accepted + rejected; first reasons sum to
    rejected; each check's failures = its count in rejected_by_reason. No timings: the
    stage's outputs are a pure function of its inputs and params (whatever the workers)."""
    rejected = [r for r in results if r.reasons]
    by_reason = {n: sum(n in r.reasons for r in rejected) for n in checks.CHECKS}
    by_first = {n: sum(r.reasons[0] == n for r in rejected) for n in checks.CHECKS}
    per_check = {}
    for name, check in checks.CHECKS.items():
        judged = [r.outcomes[name] for r in results if r.outcomes.get(name) is not None]
        passed = sum(o.passed for o in judged)
        lo, hi = check.bounds(cfg)
        per_check[name] = {"evaluated": len(judged), "passed": passed, "failed": len(judged) - passed,
                           "pass_rate": round(passed / len(judged), 6) if judged else None,
                           "low": lo, "high": hi, "about": check.about}
        assert per_check[name]["failed"] == by_reason[name], name
    m = {"samples_in": len(results), "accepted": len(results) - len(rejected), "rejected": len(rejected),
         "rejected_by_reason": {n: c for n, c in by_reason.items() if c},
         "rejected_by_first_reason": {n: c for n, c in by_first.items() if c},
         "checks": per_check, "identity_encoder": cfg.identity.encoder}
    assert m["samples_in"] == m["accepted"] + m["rejected"], "every sample is accepted or rejected"
    assert sum(m["rejected_by_first_reason"].values()) == m["rejected"], "first reasons sum to rejected"
    return m


def _write_outputs(results: list[SampleResult], gen: Path, out: Path, cfg: QaConfig) -> QaStats:
    m = metrics(results, cfg)
    rows = [_row(r) for r in results]
    pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), out / "scores.parquet")
    rejected = [{**row, "first_reason": row["reasons"][0]} for row in rows if row["reasons"]]
    pq.write_table(pa.Table.from_pylist(rejected, schema=_schema(first_reason=True)), out / "quarantine.parquet")
    (out / "accepted.txt").write_text("".join(f"{r.key}\n" for r in results if not r.reasons))
    bad = {r.key for r in results if r.reasons}
    write_samples(out / "quarantine.tar", samples_with_keys(gen / "chunks", bad))
    (out / "metrics.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    return QaStats(m["samples_in"], m["accepted"], m["rejected"], m["rejected_by_reason"],
                   m["rejected_by_first_reason"], {n: c["pass_rate"] for n, c in m["checks"].items()},
                   0.0, str(out))


def run(params: Params, paths: Mapping[str, Path], *, progress: bool = True) -> QaStats:
    """The stage (``spotdiff.stages``): score ``paths["generated"]`` into ``paths["out"]`` with params ``qa``
    (and ``embed`` for the ``embed`` identity encoder); ``paths["metrics"]`` gets the counts and pass
    rates that ``dvc metrics show/diff`` compare."""
    stats = run_qa(paths["generated"], paths["out"], params.qa, progress=progress, embed_config=params.embed)
    write_qa_metrics(Path(paths["out"]) / "metrics.json", Path(paths["metrics"]))
    return stats


def write_qa_metrics(full: Path, out: Path) -> None:
    """Flatten QA's metrics.json to what `dvc metrics show/diff` compares: counts and pass rates."""
    m = json.loads(full.read_text())
    flat = {"samples_in": m["samples_in"], "accepted": m["accepted"], "rejected": m["rejected"],
            "pass_rate": round(m["accepted"] / max(1, m["samples_in"]), 4),
            "check_pass_rate": {k: round(v["pass_rate"], 4) for k, v in sorted(m["checks"].items())}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
