"""The one way mlops predicts: a registered model's spec, its input contract, and `LoadedModel.score`.

    spec.py       ModelSpec / FeatureSpec: a typed, frozen view of the manifest
    contract.py   coercion and row-by-row validation against the input contract
    predictor.py  one model call per batch; the argmax-versus-predict rule, decided at load
    threads.py    one BLAS/OpenMP thread for small batches
    artifacts.py  reading a pickle; what a fitted estimator says about itself
    onnx.py       conversion (skl2onnx) and the ONNX predictor (onnxruntime)
    formats.py    which stored file a load reads (pickle, skops, ONNX), and storing them at registration
    model.py      LoadOptions, LoadedModel.load / LoadedModel.score -> Scored
    labelled.py   predictions on labelled rows, for metrics
    latency.py    single-row latency of the serving path

No I/O beyond loading from the registry, no signals, no `sys.stdout`; safe to call from several threads.
"""

from mlops_cli.runtime.model import RUNTIME, RUNTIMES, LoadedModel, LoadOptions, Scored, proba_column
from mlops_cli.runtime.spec import FeatureSpec, ModelSpec

__all__ = ["RUNTIME", "RUNTIMES", "FeatureSpec", "LoadOptions", "LoadedModel", "ModelSpec", "Scored", "proba_column"]
