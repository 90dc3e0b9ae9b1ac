"""Export a trained planner: the policy's deterministic action as an ONNX model, and a JSON
sidecar with everything else a deployment needs (observation layout and normalization, action
mapping, analyzer settings, env id and options, the scenario, what training saw for the guard
(``training_range``, carried from the model's sidecar as is), versions).

``adaptflow export RUN_DIR`` is :func:`export_run`. The ONNX graph maps a *normalized*
observation batch ``observation: float32[batch, n]`` to ``action: int64[batch, dims]`` (argmax of
each action dimension's logits, or of the Q-values for DQN). Normalization stays outside the
graph, as VecNormalize keeps it outside the network in training, and the sidecar carries it, so
:class:`~adaptflow.runtime.onnx_planner.OnnxPlanner` applies exactly what SB3 applied.

Export is the one part of the runtime that needs torch (and the env the model was trained in,
found through Gymnasium's registry by the id in the model's sidecar, see
:func:`adaptflow.policies.sb3.make_env`); the deployed planner needs neither.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptflow._io import atomic_write, atomic_write_text, package_versions
from adaptflow.agents.encoding import ObservationNormalizer
from adaptflow.policies.guard import TrainingRange
from adaptflow.policies.onnx import SIDECAR_FORMAT, OnnxPlanner
from adaptflow.policies.sb3 import algorithm_class, make_env

EXPORT_PACKAGES = ("adaptflow", "torch", "stable-baselines3", "onnx", "onnxruntime", "gymnasium", "numpy")


class DeterministicPolicy(torch.nn.Module):
    """An SB3 policy's deterministic action as a plain torch module (no sampling, no numpy)."""

    def __init__(self, policy: Any, nvec: list[int], algorithm: str):
        super().__init__()
        self.policy, self.nvec, self.algorithm = policy, [int(n) for n in nvec], algorithm

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        if self.algorithm == "DQN":
            return self.policy.q_net(observation).argmax(dim=1, keepdim=True)
        features = self.policy.extract_features(observation)
        if isinstance(features, tuple):  # separate actor and critic feature extractors
            features = features[0]
        logits = self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))
        return torch.stack([part.argmax(dim=1) for part in torch.split(logits, self.nvec, dim=1)], dim=1)


def _read_model(model_path: Path) -> tuple[dict[str, Any], Any]:
    """A saved model's sidecar and the model (SB3, on the CPU); refuses what export cannot do."""
    meta_path = model_path.with_suffix(".json")
    if not model_path.is_file() or not meta_path.is_file():
        raise ValueError(f"{str(model_path)!r} is not a saved adaptflow model (expected it and {meta_path.name})")
    meta = json.loads(meta_path.read_text())
    if meta["algorithm"] == "RecurrentPPO":
        raise ValueError("RecurrentPPO policies carry an LSTM state between decisions; export supports PPO, A2C, DQN")
    ObservationNormalizer.from_dict(meta.get("observation_normalization"))  # fail here, not at deployment
    return meta, algorithm_class(meta["algorithm"]).load(model_path, device="cpu")


def _write_onnx(module: torch.nn.Module, size: int, onnx_path: Path) -> None:
    """Trace ``module`` on a batch of observations of ``size`` features into ``onnx_path``."""
    example = torch.zeros(1, size, dtype=torch.float32)

    def write(tmp: Path) -> None:
        # The exporter narrates its passes on stdout, warns that torchvision's operators are not
        # registered (none is used) and that a pytree class is deprecated: noise for a user.
        registration = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = registration.level
        registration.setLevel(logging.ERROR)
        try:
            with redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                program = torch.onnx.export(
                    module,
                    (example,),
                    input_names=["observation"],
                    output_names=["action"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1_000_000)},),
                    dynamo=True,
                )
        finally:
            registration.setLevel(level)
        program.save(str(tmp))

    atomic_write(onnx_path, write)


def _analyzer(inner: Any) -> dict[str, Any]:
    """The analyzer the policy was trained with, as the deployed planner rebuilds it."""
    return {"forecaster": inner.options.forecaster, "forecast_steps": inner.options.forecast_steps}


def export_model(model_path: str | Path, out_dir: str | Path) -> Path:
    """Export a saved SB3 model (with the ``<model>.json`` sidecar a training run writes) to
    ``out_dir/planner.onnx`` and ``out_dir/planner.json``; returns the ONNX path."""
    model_path = Path(model_path)
    meta, model = _read_model(model_path)
    # the analyzer fitted in training, from the model's sidecar (an older sidecar: the env fits one)
    inner = make_env(meta["env_id"], **{**meta["options"], "analyzer": meta.get("fitted_analyzer")}).unwrapped
    if meta.get("training_range") is not None:  # fail here, not at deployment
        TrainingRange.from_dict(meta["training_range"]).check_layout(inner.encoder)
    nvec = [int(n) for n in inner.decoder.nvec]
    onnx_path = Path(out_dir) / "planner.onnx"
    _write_onnx(DeterministicPolicy(model.policy, nvec, meta["algorithm"]).eval(), inner.encoder.size, onnx_path)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "onnx": {
            "file": onnx_path.name,
            "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "input": "observation",
            "output": "action",
        },
        "algorithm": meta["algorithm"],
        "env_id": meta["env_id"],
        "env_options": meta["options"],
        "scenario": inner.scenario.model_dump(mode="json"),
        "decision_interval": inner.interval,
        "observation": {"encoder": inner.encoder.to_dict(), "normalization": meta.get("observation_normalization")},
        "action": {"decoder": inner.decoder.to_dict(), "nvec": nvec},
        "analyzer": _analyzer(inner),
        "fitted_analyzer": inner.analyzer.to_dict(state=False),  # loaded by the deployment, never refitted
        "fixed_workers": {} if inner.control_workers else dict(inner.fixed_workers),
        # what training saw (policies.guard.TrainingRange); None from a model older than the guard
        "training_range": meta.get("training_range"),
        "source": str(model_path.resolve()),
        "exported": datetime.now(UTC).isoformat(),
        "versions": package_versions(EXPORT_PACKAGES),
    }
    atomic_write_text(onnx_path.with_suffix(".json"), json.dumps(sidecar, indent=2))
    return onnx_path


def export_run(run_dir: str | Path, out: str | Path | None = None, model: str = "best_model.zip") -> Path:
    """Export a training run's model (the best one by default) to ``out`` (default
    ``RUN_DIR/export``); returns the ONNX path."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    path = run_dir / model
    if not path.is_file():
        raise ValueError(f"run {str(run_dir)!r} has no {model} (has training finished a validation?)")
    return export_model(path, Path(out) if out is not None else run_dir / "export")


def parity(model_path: str | Path, onnx_path: str | Path, observations: np.ndarray) -> float:
    """The share of ``observations`` (raw, as the encoder makes them) on which the SB3 model and
    the exported ONNX planner choose the same action, each with its own normalization path."""
    meta = json.loads(Path(model_path).with_suffix(".json").read_text())
    model = algorithm_class(meta["algorithm"]).load(model_path, device="cpu")
    normalizer = ObservationNormalizer.from_dict(meta.get("observation_normalization"))
    sb3_input = observations if normalizer is None else normalizer(observations)
    expected, _ = model.predict(sb3_input, deterministic=True)
    got = OnnxPlanner.load(onnx_path).act(observations)
    expected = np.asarray(expected).reshape(len(observations), -1)
    return float(np.mean(np.all(expected == got, axis=1)))
