"""The runtime: a trained planner leaves the simulator.

* :mod:`~adaptflow.runtime.export`: a training run's policy -> an ONNX model and a JSON sidecar.
* :mod:`~adaptflow.runtime.onnx_planner`: ``OnnxPlanner``, which needs only onnxruntime and numpy.
* :mod:`~adaptflow.runtime.fallback`: ``FallbackPlanner``, a baseline that takes over when the
  primary planner fails or answers out of range.
* :mod:`~adaptflow.runtime.service`: the planner service (FastAPI).
* :mod:`~adaptflow.runtime.celery_app` and :mod:`~adaptflow.runtime.live`: the live Celery world.

Nothing is imported here, so that ``import adaptflow.runtime.onnx_planner`` stays light (a
deployment of the ONNX planner does not load torch, SB3, Celery or FastAPI)."""
