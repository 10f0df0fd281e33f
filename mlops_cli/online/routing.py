"""Rows in memory through the champion, and the challenger's share of them, exactly as score-batch routes a file.

The challenger takes the rows whose split key hashes below its share (`scoring.challenger_rows`: the same function,
so a row goes to the same model online and in the nightly batch). A row without a key goes to the champion. The
models are taken once per batch (`Followed.current`), so a batch never mixes versions of one role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli.errors import SchemaMismatch
from mlops_cli.runtime import contract

if TYPE_CHECKING:
    from mlops_cli.online.following import Current, Followed
    from mlops_cli.runtime import Scored

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"


@dataclass(frozen=True)
class Part:
    """The rows one model answered (`rows`: positions in the batch)."""

    route: str
    current: Current
    rows: np.ndarray
    scored: Scored


@dataclass(frozen=True)
class Routed:
    """A batch's answer, row by row: `prediction` (None where the row was not scored), one probability column per
    class in `classes` (NaN where the answering model has no such class), the version and route that answered, and
    each invalid row's reasons ("<column>: <problem>", joined by "; ")."""

    n: int
    prediction: list[Any]
    proba: np.ndarray | None
    classes: list[Any]
    version: list[str]
    route: list[str]
    reasons: list[str | None]
    parts: list[Part]

    @property
    def invalid(self) -> np.ndarray:
        return np.array([r is not None for r in self.reasons], dtype=bool)


class Router:
    def __init__(
        self,
        champion: Followed,
        challenger: Followed | None = None,
        share: float = 0.0,
        split_key: list[str] | None = None,
    ) -> None:
        self.champion = champion
        self.challenger = challenger
        self.share = share
        self.split_key = list(split_key or [])

    def columns(self) -> list[str]:
        """The columns a request must carry: every served model's features, and the split key."""
        names: dict[str, None] = {}
        for followed in (self.champion, self.challenger):
            if followed is not None and followed.current is not None:
                names.update(dict.fromkeys(followed.current.model.spec.feature_names))
        names.update(dict.fromkeys(self.split_key))
        return list(names)

    def mistyped(self, values: Mapping[str, list[Any]]) -> dict[int, str]:
        """Rows a served model cannot take (`contract.mistyped`), with the reason, checked before the split: a row
        either model refuses is refused whichever model its key picks (a pair reads its columns alike in practice,
        and the split key is hashed once per batch, in `score`)."""
        out: dict[int, str] = {}
        for followed in (self.champion, self.challenger):
            if followed is not None and followed.current is not None:
                for row, reason in contract.mistyped(values, followed.current.model.spec).items():
                    out.setdefault(row, reason)
        return out

    def score(self, values: Mapping[str, list[Any]], n: int) -> Routed:
        """Score `n` rows given as JSON values per column (see `contract.from_values`)."""
        champion = self.champion.current
        assert champion is not None, "a router scores only once its models are loaded"
        models: list[tuple[str, Current, np.ndarray | None]] = [(CHAMPION, champion, None)]
        challenger = self.challenger.current if self.challenger is not None else None
        if challenger is not None and n:
            to_challenger = self.to_challenger(values)
            models = [
                (CHAMPION, champion, np.flatnonzero(~to_challenger)),
                (CHALLENGER, challenger, np.flatnonzero(to_challenger)),
            ]
        return assemble(n, [_score(route, current, values, rows, n) for route, current, rows in models if _any(rows)])

    def to_challenger(self, values: Mapping[str, list[Any]]) -> np.ndarray:
        """Per row, whether the challenger answers it (the split key's hash); `values` holds the split key."""
        import pyarrow as pa

        from mlops_cli.scoring import challenger_rows

        columns = []
        for name in self.split_key:
            if name not in values:
                raise SchemaMismatch(f"the rows have no column {name!r} (the split key)", "send the split key column")
            try:
                columns.append(pa.array(values[name]))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise SchemaMismatch(
                    f"the split key column {name!r} mixes types", "send the key as text or as integers"
                ) from exc
        return challenger_rows(columns, self.share)[0]


def check_pair(champion: Followed, challenger: Followed) -> None:
    """A challenger must do the champion's job: the same task (both loaded)."""
    spec_a, spec_b = champion.current.model.spec, challenger.current.model.spec  # type: ignore[union-attr]
    if spec_a.task != spec_b.task:
        raise SchemaMismatch(
            f"{challenger.ref} is a {spec_b.task}, {champion.ref} a {spec_a.task}",
            "a challenger must do the champion's job",
        )


def _any(rows: np.ndarray | None) -> bool:
    return rows is None or len(rows) > 0


def _score(route: str, current: Current, values: Mapping[str, list[Any]], rows: np.ndarray | None, n: int) -> Part:
    spec = current.model.spec
    if rows is None:
        picked = {name: values[name] for name in spec.feature_names if name in values}
        rows = np.arange(n)
    else:
        index = rows.tolist()
        picked = {name: [values[name][i] for i in index] for name in spec.feature_names if name in values}
    return Part(route, current, rows, current.model.score(contract.from_values(picked, spec)))


def assemble(n: int, parts: list[Part]) -> Routed:
    """One answer per row from the parts the models answered."""
    classes: list[Any] = []
    for part in parts:
        if part.scored.proba is not None:
            classes += [c for c in part.scored.classes or () if c not in classes]
    prediction: list[Any] = [None] * n
    proba = np.full((n, len(classes)), np.nan) if classes else None
    version: list[str] = [""] * n
    route: list[str] = [""] * n
    reasons: list[str | None] = [None] * n
    for part in parts:
        rows, scored = part.rows, part.scored
        label = part.current.version
        for i in rows.tolist():
            version[i], route[i] = label, part.route
        if scored.invalid.any():
            for reason, mask in scored.reasons.items():
                for i in rows[mask].tolist():
                    reasons[i] = reason if reasons[i] is None else f"{reasons[i]}; {reason}"
        answered = rows[scored.scored_rows]
        for i, value in zip(answered.tolist(), scored.prediction.tolist(), strict=True):
            prediction[i] = value
        if proba is not None and scored.proba is not None:
            for j, label_ in enumerate(scored.classes or ()):
                proba[answered, classes.index(label_)] = scored.proba[:, j]
    return Routed(n, prediction, proba, classes, version, route, reasons, parts)
