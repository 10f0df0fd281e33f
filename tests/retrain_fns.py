"""Training functions for the retrain tests (`--train-fn retrain_fns:<name>`)."""

from sklearn.dummy import DummyClassifier


def explode(train, target):
    raise RuntimeError("the feature store is down")


def prior_only(train, target):
    """A challenger that ignores its inputs: it must lose to any real model."""
    return DummyClassifier(strategy="prior").fit(train.drop(columns=[target]), train[target].astype(int))


def not_a_model(train, target):
    return {"weights": [1, 2, 3]}


def as_given(train, target):
    """Fits on the target exactly as it is handed over (a nullable column arrives as float in the file)."""
    return DummyClassifier(strategy="prior").fit(train.drop(columns=[target]), train[target])
