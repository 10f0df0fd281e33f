"""Request rows plus looked-up features: the rows the model is given, and the policy for what is missing.

A row may carry the entity id alone, or the id and some features computed at request time: a feature the row
carries is used as sent (null included: a missing value is the input contract's to judge), and the others come
from the feature view. When the entity is unknown to the view (never loaded, or expired by the view's TTL), or the
view lacks a feature the row does not carry either, the declared policy decides:

- `reject`: the request fails (HTTP 422, exit 3) with the reason and the rows, never the ids;
- `fill`: the feature takes its value in the reference profile of the model version that answers the row (the
  champion's or, for a row routed to the challenger, the challenger's: the training data's median, most frequent
  category, or majority boolean), and the row says which features were filled and why.

Nothing is ever filled silently: a fill is in the answer, the prediction log and the fallback metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InvalidData

if TYPE_CHECKING:
    from mlops_cli.features.lookup import Entity
    from mlops_cli.runtime import LoadedModel
    from mlops_cli.runtime.spec import ModelSpec

POLICIES = ("reject", "fill")
UNKNOWN_ENTITY = "unknown entity"
MISSING_FEATURE = "missing feature"
NO_ID = "no entity id"


class _Absent:
    """A feature the request did not carry (unlike null, which it did)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Assembled:
    """Rows ready for the model, and per row where their features came from."""

    values: dict[str, list[Any]]
    view: str
    versions: list[int | None]  # per row: the view version its features came from (None: it needed no lookup)
    from_store: list[str | None]  # per row: the features taken from the store, comma-joined
    filled: list[str | None]  # per row: the features filled from the reference profile, comma-joined
    fallback: list[str | None]  # per row: why it was filled (unknown entity, missing feature)
    fallbacks: dict[str, int]  # rows whose features were incomplete, by reason (filled or rejected)
    rejected: dict[str, list[int]]  # the rows (1-based) the policy rejects, by reason
    policy: str = "reject"
    entity_ids: list[str | None] | None = None  # per row, the entity id as its key text (for the prediction log)

    def check(self) -> None:
        """InvalidData (HTTP 422, exit 3) when the policy rejected rows."""
        if self.rejected:
            raise _rejected(self.view, self.rejected, self.policy)

    def flags(self, i: int) -> dict[str, Any]:
        """What an answer row says about its features."""
        out: dict[str, Any] = {"feature_view_version": self.versions[i]}
        if self.filled[i] is not None:
            out["features_filled"] = self.filled[i].split(",")  # type: ignore[union-attr]
            out["feature_fallback"] = self.fallback[i]
        return out


def needs_lookup(values: Mapping[str, list[Any]], names: list[str], n: int) -> list[int]:
    """Positions of the rows that lack at least one of `names`."""
    columns = [values.get(name) for name in names]
    return [i for i in range(n) if any(c is None or c[i] is ABSENT for c in columns)]


def assemble(
    values: Mapping[str, list[Any]],
    n: int,
    names: list[str],
    view: str,
    rows: list[int],
    entities: list[Entity | None],
    *,
    policy: str,
    version: int | None = None,
    fill: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
    ids_given: list[bool] | None = None,
) -> Assembled:
    """Complete columns `names` for `n` rows; `rows` are the positions that were looked up, `entities` what the
    store's `version` of the view said for each. `fill` is the stand-ins for every row, or a list of them per row
    (each row's answering model's). What the policy rejects (every incomplete row under `reject`; under `fill`, a
    row missing a feature with no reference value) is in `rejected`: `Assembled.check` raises it."""
    out = {name: list(values[name]) if name in values else [ABSENT] * n for name in names}
    from_store: list[str | None] = [None] * n
    filled: list[str | None] = [None] * n
    fallback: list[str | None] = [None] * n
    problems: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    versions: list[int | None] = [None] * n
    for i, entity in zip(rows, entities, strict=True):
        taken, gaps = [], []
        versions[i] = version
        for name in names:
            if out[name][i] is not ABSENT:
                continue
            has, value = entity.get(name) if entity is not None else (False, None)
            if has:
                out[name][i] = value
                taken.append(name)
            else:
                gaps.append(name)
        from_store[i] = ",".join(taken) if taken else None
        if not gaps:
            continue
        if ids_given is not None and not ids_given[i]:
            reason = NO_ID
        else:
            reason = UNKNOWN_ENTITY if entity is None else MISSING_FEATURE
        counts[reason] = counts.get(reason, 0) + 1
        stand_in = fill[i] if isinstance(fill, Sequence) else fill
        if policy == "fill" and stand_in is not None and all(g in stand_in for g in gaps):
            for name in gaps:
                out[name][i] = stand_in[name]
            filled[i], fallback[i] = ",".join(gaps), reason
            continue
        label = reason if reason != MISSING_FEATURE else f"{MISSING_FEATURE} {', '.join(gaps)}"
        if policy == "fill":
            label += " (no reference value to fill)"
        problems.setdefault(label, []).append(i + 1)
    return Assembled(out, view, versions, from_store, filled, fallback, counts, problems, policy)


def _rejected(view: str, problems: dict[str, list[int]], policy: str) -> InvalidData:
    parts = []
    for label, rows in sorted(problems.items()):
        shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
        parts.append(f"{label} (row{'s' if len(rows) > 1 else ''} {shown})")
    hint = (
        "send those features with the rows, load the entities, or use --on-missing-feature fill"
        if policy == "reject"
        else "send those features with the row, or load them into the view"
    )
    return InvalidData(f"feature view {view!r} cannot complete the rows: {'; '.join(parts)}", hint)


def fill_values(profile: Mapping[str, Any] | None, spec: ModelSpec) -> dict[str, Any]:
    """Each feature's stand-in from a reference profile: the median (rounded for integer features), the most
    frequent category, the majority boolean. A feature the profile cannot stand in for (dates, no statistics) is
    left out, and a row missing it is rejected even under `fill`."""
    stats = (profile or {}).get("features", {})
    out: dict[str, Any] = {}
    for feature in spec.features:
        entry = stats.get(feature.name) or {}
        kind = entry.get("kind", feature.kind)
        if kind == "numeric" and "quantiles" in entry:
            median = float(entry["quantiles"]["0.5"])
            out[feature.name] = int(round(median)) if feature.integer else median
        elif kind == "boolean" and "mean" in entry:
            out[feature.name] = bool(entry["mean"] >= 0.5)
        elif kind == "categorical" and entry.get("frequencies"):
            frequencies = entry["frequencies"]
            out[feature.name] = max(sorted(frequencies), key=lambda k: frequencies[k])
    return out


def reference_fills(model: LoadedModel) -> dict[str, Any]:
    """`fill_values` from a registered version's reference profile (ModelNotFound if it has none)."""
    import json

    from mlops_cli.errors import ModelNotFound
    from mlops_cli.registry import PROFILE

    version = model.version
    if version is None or PROFILE not in version.manifest["files"]:
        raise ModelNotFound(
            f"{version.ref if version else 'the model'} has no reference profile to fill missing features from",
            "register it with --train-data, or use --on-missing-feature reject",
        )
    return fill_values(json.loads(version.file(PROFILE).read_text()), model.spec)
