"""A transformer that is not scikit-learn's own: skl2onnx cannot convert it and skops does not trust it by default."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Log1p(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):  # noqa: N803
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):  # noqa: N803
        return np.log1p(np.abs(np.asarray(X, dtype=float)))
