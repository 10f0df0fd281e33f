"""Fit the example classifier: will a New York flight arrive more than 15 minutes late?

    python sample_data/train.py sample_data/reference.parquet model.joblib [--max-iter 200] [--seed 0] [--split-dir DIR]

With --split-dir, the latest 20% of the labelled rows (by date) are held out: the model is fitted on the rest, and
both parts are written to DIR/train.parquet and DIR/eval.parquet, so `mlops register` can record the data the model
really saw and test metrics on later flights it did not see.

A scikit-learn Pipeline: categorical columns (carrier, origin, dest) are one-hot encoded with unseen categories
ignored; numeric weather columns keep their NaNs, which HistGradientBoosting handles natively.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

CATEGORICAL = ["carrier", "origin", "dest"]
NUMERIC = [
    "sched_dep_hour",
    "day_of_week",
    "distance",
    "temp",
    "dewp",
    "humid",
    "wind_speed",
    "precip",
    "pressure",
    "visib",
]
FEATURES = CATEGORICAL + NUMERIC
TARGET = "delayed"


def build(max_iter: int = 200, seed: int = 0) -> Pipeline:
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    columns = ColumnTransformer([("cat", categorical, CATEGORICAL), ("num", "passthrough", NUMERIC)])
    model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.08, random_state=seed)
    return Pipeline([("columns", columns), ("model", model)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-dir", type=Path, help="hold out the latest 20%% and write train/eval parquet here")
    args = parser.parse_args()
    frame = pd.read_parquet(args.data) if args.data.suffix == ".parquet" else pd.read_csv(args.data)
    frame = frame[frame[TARGET].notna()].sort_values("date", kind="stable")
    if args.split_dir:
        cut = int(len(frame) * 0.8)
        args.split_dir.mkdir(parents=True, exist_ok=True)
        frame.iloc[cut:].to_parquet(args.split_dir / "eval.parquet", index=False)
        frame = frame.iloc[:cut]
        frame.to_parquet(args.split_dir / "train.parquet", index=False)
    model = build(args.max_iter, args.seed).fit(frame[FEATURES], frame[TARGET].astype(int))
    joblib.dump(model, args.out)
    print(f"trained on {len(frame):,} rows -> {args.out}")


if __name__ == "__main__":
    main()
