"""Per-flight outcomes of a champion/challenger split, ready for `mlops abtest` (the demo's online experiment).

    python sample_data/outcomes.py SCORES OUT [--data sample_data/current.parquet]
                                   [--champion flights@production --challenger flights:2]

SCORES is what `mlops score-batch` writes with a challenger split: one row per flight with `flight`, `date`,
`delayed`, `prediction`, `proba_0`, `proba_1`, `model_name`, `model_version` (the version that scored the row).
OUT gets one row per flight whose outcome is known (`delayed` not null):

    variant   the model version that scored the flight (the experiment's arm)
    correct   1 when the prediction matched the outcome, else 0          (binary: two-proportion z-test)
    brier     (proba_1 - delayed)², the squared error of the probability (continuous, lower is better: Welch)

When SCORES does not exist yet and --champion/--challenger are given, this script writes it first by scoring
--data itself: each flight goes to one model, 50/50 by a hash of the flight's identity, as a live split would.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import pandas as pd

from mlops_cli import io
from mlops_cli.registry import Registry
from mlops_cli.runtime import LoadedModel

SCORE_COLUMNS = ["flight", "date", "delayed", "prediction", "proba_0", "proba_1", "model_name", "model_version"]


def split_and_score(registry: Registry, champion: str, challenger: str, data: Path) -> pd.DataFrame:
    """What score-batch's challenger split produces: each row scored by one of the two models."""
    frame = io.read_table(data)
    # A flight is a (date, carrier, flight number, origin, hour): a flight number alone repeats across carriers.
    keys = frame[["date", "carrier", "flight", "origin", "sched_dep_hour"]].astype(str).agg("/".join, axis=1)
    to_challenger = keys.map(lambda k: hashlib.sha256(k.encode()).digest()[0] % 2 == 1)
    parts = []
    for ref, rows in ((champion, frame[~to_challenger]), (challenger, frame[to_challenger])):
        model = LoadedModel.load(registry, ref)  # the one runtime, as score-batch scores
        scored = model.score(rows).frame(rows.index)
        parts.append(
            rows[["flight", "date", "delayed"]]
            .join(scored)
            .assign(model_name=model.spec.name, model_version=model.spec.version)
        )
    return pd.concat(parts).sort_index()[SCORE_COLUMNS]


def outcomes(scores: pd.DataFrame) -> pd.DataFrame:
    known = scores[scores["delayed"].notna()]
    delayed = known["delayed"].astype(int)
    return pd.DataFrame(
        {
            "variant": known["model_version"].astype(str),
            "flight": known["flight"],
            "date": known["date"],
            "delayed": delayed,
            "correct": (known["prediction"].astype(int) == delayed).astype(int),
            "brier": (known["proba_1"] - delayed) ** 2,
        }
    ).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=Path("sample_data/current.parquet"))
    parser.add_argument("--champion")
    parser.add_argument("--challenger")
    parser.add_argument("--registry", type=Path, default=Path(os.environ.get("MLOPS_REGISTRY", "registry")))
    args = parser.parse_args()
    if not args.scores.exists():
        if not (args.champion and args.challenger):
            parser.error(f"{args.scores} does not exist; pass --champion and --challenger to create it")
        io.write_table(args.scores, split_and_score(Registry(args.registry), args.champion, args.challenger, args.data))
        print(
            f"no score-batch output yet: split {args.data} between {args.champion} and {args.challenger} "
            f"-> {args.scores}"
        )
    result = outcomes(io.read_table(args.scores))
    io.write_table(args.out, result)
    counts = ", ".join(f"version {v}: {n:,}" for v, n in result["variant"].value_counts().sort_index().items())
    print(f"{len(result):,} flights with a known outcome ({counts}) -> {args.out}")


if __name__ == "__main__":
    main()
