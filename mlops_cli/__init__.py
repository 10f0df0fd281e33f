"""mlops: take trained scikit-learn models through their life in production, on local files only."""

__version__ = "0.1.0"
