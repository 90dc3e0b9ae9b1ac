"""The runtime: a trained planner leaves the simulator.

* :mod:`~adaptflow.runtime.export`: a training run's policy -> an ONNX model and a JSON sidecar
  (the one part of the runtime that needs torch).
* :mod:`~adaptflow.runtime.onnx_planner`: the deployed ``OnnxPlanner``, which needs only the core
  install (onnxruntime, numpy, pydantic, pyyaml); it lives in :mod:`adaptflow.policies.onnx`.
* :mod:`~adaptflow.runtime.fallback`: ``FallbackPlanner``, a baseline that takes over when the
  primary planner fails or answers out of range.
* :mod:`~adaptflow.runtime.service`: the planner service (FastAPI).
* :mod:`~adaptflow.runtime.celery_app`, :mod:`~adaptflow.runtime.live` and
  :mod:`~adaptflow.runtime.live_run`: the live Celery world.

Nothing is imported here, so that ``import adaptflow.runtime.onnx_planner`` stays light. The
runtime imports agents, policies and the scenario room, never the experiments, the envs or the
simulator (docs/architecture.md; checked by ``make lint``)."""
