"""`score-batch --features`: a file of entity ids (and any features it carries) completed from a feature view.

The view's version is pinned when the run starts, and every batch's ids are read from that version's keys (MGET,
in chunks); if the view's pointer moves during the run, the run stops (nothing is written) rather than mix two
loads in one predictions file. A feature the file has is taken from the file, as a served request's own features
are; the others come from the view, and missing ones follow the same policy as `serve` (`assemble`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import FeatureStoreError, SchemaMismatch
from mlops_cli.features.assemble import ABSENT, POLICIES, assemble, reference_fills
from mlops_cli.features.lookup import Entity
from mlops_cli.features.store import Record, Store, version_prefix

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops_cli.runtime import LoadedModel

CHUNK = 10_000  # ids per MGET
FILLED_COLUMN = "features_filled"


@dataclass(frozen=True)
class BatchFeatureOptions:
    url: str
    view: str
    entity_column: str
    on_missing: str = "reject"
    timeout_s: float = 5.0


class BatchFeatures:
    def __init__(
        self, options: BatchFeatureOptions, champion: LoadedModel, challenger: LoadedModel | None = None
    ) -> None:
        if options.on_missing not in POLICIES:
            raise SchemaMismatch(f"--on-missing-feature {options.on_missing!r}", f"use one of {', '.join(POLICIES)}")
        self.options = options
        self.store = Store(options.url, timeout_s=options.timeout_s)
        self.record: Record = self.store.require(options.view)
        self.prefix = version_prefix(options.view, self.record.version)
        fill = options.on_missing == "fill"
        self.fill = reference_fills(champion) if fill else None
        self.challenger_fill = reference_fills(challenger) if fill and challenger is not None else None
        self.looked_up: list[str] = []
        self.kinds: dict[str, str | None] = {f.name: f.kind for f in champion.spec.features}
        self.rows_looked_up = self.unknown = 0
        self.fallbacks: dict[str, int] = {}

    @property
    def provided(self) -> list[str]:
        return self.record.features

    def plan(self, columns: list[str], features: list[str]) -> None:
        """Which of the models' `features` come from the view (those the file lacks); the file needs the id."""
        if self.options.entity_column not in columns:
            raise SchemaMismatch(
                f"the input has no entity column {self.options.entity_column!r}", f"its columns are {columns[:20]}"
            )
        self.looked_up = [f for f in features if f not in columns]
        for f in features:
            self.kinds.setdefault(f, None)

    def complete(
        self, batch: pa.RecordBatch, offset: int, to_challenger: Any = None
    ) -> tuple[pa.RecordBatch, list[str | None]]:
        """`batch` with the looked-up features appended, and per row the features filled from the profile (of the
        model that answers the row: `to_challenger` marks the challenger's rows)."""

        from mlops_cli.scoring import key_text

        n = batch.num_rows
        if not self.looked_up:
            return batch, [None] * n
        ids = key_text([batch.column(self.options.entity_column)]).to_pylist()
        wanted = [i for i, key in enumerate(ids) if key is not None]
        raw: list[bytes | None] = []
        for start in range(0, len(wanted), CHUNK):
            keys = [self.prefix + ids[i] for i in wanted[start : start + CHUNK]]
            raw += self.store.call(self.store.client.mget, keys)
        self._check_pinned()
        entities: list[Entity | None] = [None] * n
        for i, value in zip(wanted, raw, strict=True):
            if value is not None:
                entities[i] = Entity(self.record, json.loads(value))
        self.rows_looked_up += n
        self.unknown += sum(e is None for e in entities)
        values = {name: [ABSENT] * n for name in self.looked_up}
        assembled = assemble(
            values,
            n,
            self.looked_up,
            self.options.view,
            list(range(n)),
            entities,
            policy=self.options.on_missing,
            version=self.record.version,
            fill=self._fills(to_challenger),
            ids_given=[key is not None for key in ids],
        )
        for reason, count in assembled.fallbacks.items():
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + count
        if assembled.rejected:
            assembled = _shifted(assembled, offset)
        assembled.check()
        for name in self.looked_up:
            batch = batch.append_column(name, _array(assembled.values[name], self.kinds.get(name)))
        return batch, assembled.filled

    def _fills(self, to_challenger: Any) -> Any:
        if self.challenger_fill is None or to_challenger is None:
            return self.fill
        return [self.challenger_fill if routed else self.fill for routed in to_challenger.tolist()]

    def _check_pinned(self) -> None:
        now = self.store.record(self.options.view)
        if now is None or now.version != self.record.version:
            moved = f"version {now.version}" if now is not None else "nothing (it was removed)"
            raise FeatureStoreError(
                f"feature view {self.options.view!r} moved from version {self.record.version} to {moved} during "
                "the run; nothing was written",
                "run it again",
            )

    def results(self) -> dict[str, Any]:
        return {
            "store": self.store.url,
            "view": self.options.view,
            "version": self.record.version,
            "entity_column": self.options.entity_column,
            "looked_up": self.looked_up,
            "on_missing_feature": self.options.on_missing,
            "rows_looked_up": self.rows_looked_up,
            "unknown_entities": self.unknown,
            "fallbacks": self.fallbacks,
        }

    def close(self) -> None:
        self.store.close()


def _shifted(assembled: Any, offset: int) -> Any:
    """Row numbers in the file, not in the batch."""
    from dataclasses import replace

    rejected = {label: [r + offset for r in rows] for label, rows in assembled.rejected.items()}
    return replace(assembled, rejected=rejected)


def _array(values: list[Any], kind: str | None) -> pa.Array:
    """A looked-up column typed as a Parquet file would hold it, so the input contract treats it alike."""
    import pyarrow as pa

    target = {"numeric": pa.float64(), "boolean": pa.bool_(), "categorical": pa.string(), "datetime": pa.string()}.get(
        kind or ""
    )
    try:
        return pa.array(values, type=target) if target is not None else pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())
