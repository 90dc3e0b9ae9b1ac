"""The deployed planner: ``OnnxPlanner.load("export/").plan(snapshot, insights)``.

Importing this module loads numpy, pydantic, yaml and adaptflow's light rooms (scenario, the
agents' types, encoder and decoder), and onnxruntime on ``load``; never torch,
stable-baselines3, gymnasium, SimPy or pandas (``tests/test_runtime.py`` checks it in a clean
interpreter, with the import time). The class lives in :mod:`adaptflow.policies.onnx`, where the
planner registry can build it from an ``onnx:PATH`` spec; this is its deployment address."""

from adaptflow.policies.onnx import SIDECAR_FORMAT, OnnxPlanner, check_deployment, read_export

__all__ = ["SIDECAR_FORMAT", "OnnxPlanner", "check_deployment", "read_export"]
