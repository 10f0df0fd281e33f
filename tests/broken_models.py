"""Deliberately broken classifiers for the gate tests. Each wraps a real fitted model and breaks one promise."""

import os
import sys
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin


class _Inner(BaseEstimator):
    """Holds a fitted model; subclasses choose which of its methods (and which mixin) they expose."""

    def __init__(self, inner=None):
        self.inner = inner
        self.is_fitted_ = inner is not None

    def fit(self, X, y):  # noqa: N803
        return self

    @property
    def feature_names_in_(self):
        return self.inner.feature_names_in_


class Wrapped(ClassifierMixin, _Inner):
    @property
    def classes_(self):
        return self.inner.classes_

    def predict_proba(self, X):  # noqa: N803
        return self.inner.predict_proba(X)

    def predict(self, X):  # noqa: N803
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class ReturnsNaN(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        proba = super().predict_proba(X)
        proba[::2] = np.nan
        return proba

    def predict(self, X):  # noqa: N803
        return self.inner.predict(X)


class ProbabilitiesAboveOne(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        return super().predict_proba(X) * 1.5


class Nondeterministic(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        proba = super().predict_proba(X)
        noise = np.random.default_rng().uniform(0, 1e-3, len(proba))
        proba[:, 0] = np.clip(proba[:, 0] + noise, 0, 1)
        proba[:, 1] = 1 - proba[:, 0]
        return proba


class Slow(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        if len(X) == 1:  # slow per request, as a model behind a slow feature lookup would be
            time.sleep(0.05)
        return super().predict_proba(X)


class CrashesOnNaN(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        if X.select_dtypes("number").isna().to_numpy().any():
            raise ValueError("Input contains NaN")
        return super().predict_proba(X)


class LabelsAtRandom(Wrapped):
    """Sound probabilities, but `predict` answers at random: only a check of the labels themselves finds it."""

    def predict(self, X):  # noqa: N803
        return self.classes_[np.random.default_rng().integers(0, 2, len(X))]


class SumsOff(Wrapped):
    """Every other row's probabilities sum to 0.9; the others to 1."""

    def predict_proba(self, X):  # noqa: N803
        proba = super().predict_proba(X)
        proba[::2] *= 0.9
        return proba


class RaisesAlways(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        raise RuntimeError("model server unreachable")

    def predict(self, X):  # noqa: N803
        raise RuntimeError("model server unreachable")


class Exits(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        sys.exit(0)


class Prints(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        print("scoring", len(X), "rows")
        return super().predict_proba(X)


class WritesToFd1(Wrapped):
    """Output that bypasses sys.stdout, as a C library's printf does."""

    def predict_proba(self, X):  # noqa: N803
        print("printed by the model")
        os.write(1, b"written to fd 1\n")
        return super().predict_proba(X)


class NoProba(ClassifierMixin, _Inner):
    """A classifier without predict_proba (an SVC without probability=True, say)."""

    @property
    def classes_(self):
        return self.inner.classes_

    def predict(self, X):  # noqa: N803
        return self.inner.predict(X)


class RegressorReturnsInf(RegressorMixin, _Inner):
    """A regressor whose every third prediction (of a batch) is Inf."""

    def predict(self, X):  # noqa: N803
        out = self.inner.predict(X).astype(float)
        out[::3] = np.inf
        return out


class HighThreshold(Wrapped):
    """A tuned decision threshold: `predict` says 1 only above 0.7, so it differs from the argmax of the
    probabilities, but only on rows whose probability of 1 lies between 0.5 and 0.7."""

    def predict(self, X):  # noqa: N803
        return np.where(self.predict_proba(X)[:, 1] > 0.7, self.classes_[1], self.classes_[0])
