"""Deliberately broken classifiers for the gate tests. Each wraps a real fitted model and breaks one promise."""

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class Wrapped(ClassifierMixin, BaseEstimator):
    def __init__(self, inner=None):
        self.inner = inner
        self.is_fitted_ = inner is not None  # what check_is_fitted looks for: the inner model is fitted

    def fit(self, X, y):  # noqa: N803  (scikit-learn's signature)
        return self

    @property
    def classes_(self):
        return self.inner.classes_

    @property
    def feature_names_in_(self):
        return self.inner.feature_names_in_

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
            time.sleep(0.01)
        return super().predict_proba(X)


class CrashesOnNaN(Wrapped):
    def predict_proba(self, X):  # noqa: N803
        if X.select_dtypes("number").isna().to_numpy().any():
            raise ValueError("Input contains NaN")
        return super().predict_proba(X)


class HighThreshold(Wrapped):
    """A tuned decision threshold: `predict` says 1 only above 0.7, so it differs from the argmax of the
    probabilities, but only on rows whose probability of 1 lies between 0.5 and 0.7."""

    def predict(self, X):  # noqa: N803
        return np.where(self.predict_proba(X)[:, 1] > 0.7, self.classes_[1], self.classes_[0])
