"""The generate stage's output folder as the stages after it read it: ``records.parquet`` (one row per
kept group, with the sha256 of each of its members) and ``chunks/chunk-*.tar``."""

from __future__ import annotations

from pathlib import Path


def recorded_digests(gen_dir: str | Path) -> dict[str, dict[str, str]]:
    """Key -> member name -> sha256 hex, as generate recorded them. Empty for an output written before
    generate recorded digests (nothing to check against)."""
    import pyarrow.parquet as pq

    table = pq.read_table(Path(gen_dir) / "records.parquet")
    if "members" not in table.column_names:
        return {}
    return {key: {m["name"]: m["sha256"] for m in members}
            for key, members in zip(table.column("key").to_pylist(), table.column("members").to_pylist())}
