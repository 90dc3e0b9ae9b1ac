"""A planner exported to ONNX, as a Planner: only onnxruntime and numpy at run time (plus the
shared encoder and decoder of :mod:`adaptflow.agents`), never torch, SB3, gymnasium or the
simulator. Deployments import it as :mod:`adaptflow.runtime.onnx_planner`.

It lives in ``policies`` because loading a learned planner is the policies room's job: the
planner registry (:mod:`adaptflow.policies.registry`) resolves ``onnx:PATH`` to it without the
policies room importing the runtime (see docs/architecture.md).

The observation path is the one the policy was trained with: the shared ObservationEncoder, then
the saved VecNormalize statistics, then the ONNX graph, then the shared ActionDecoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from adaptflow.agents.encoding import ActionDecoder, ObservationEncoder, ObservationNormalizer
from adaptflow.agents.interfaces import Planner
from adaptflow.agents.types import Insights, MetricsSnapshot, Plan
from adaptflow.scenario import Scenario

SIDECAR_FORMAT = "adaptflow-planner/1"


def read_export(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """An exported planner's ONNX file and its sidecar's contents, from the file or its directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "planner.onnx"
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise ValueError(f"{str(path)!r}: expected an exported planner (planner.onnx and planner.json)")
    meta = json.loads(sidecar.read_text())
    if meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{str(sidecar)!r} has format {meta.get('format')!r}; expected {SIDECAR_FORMAT!r}")
    return path, meta


def check_deployment(meta: dict[str, Any], scenario: Scenario, interval: float) -> None:
    """An exported planner's observation layout is tied to the stages and the decision interval
    it was trained with: refuse to run it on a scenario with other stages or another interval."""
    trained = list(meta["action"]["decoder"]["stages"]) or list(meta["scenario"]["stages"])
    missing = [s for s in trained if s not in scenario.stages]
    if missing:
        raise ValueError(
            f"exported planner controls stages {trained}; scenario {scenario.name!r} has {list(scenario.stages)}"
        )
    if abs(float(meta["decision_interval"]) - interval) > 1e-9:
        raise ValueError(
            f"exported planner was trained with decision_interval {meta['decision_interval']} s; "
            f"asked to run at {interval} s"
        )


class OnnxPlanner(Planner):
    relies_on_clamping = False  # its decoder stays in bounds: anything else is a fault

    def __init__(
        self,
        session: Any,  # onnxruntime.InferenceSession
        encoder: ObservationEncoder,
        decoder: ActionDecoder,
        normalizer: ObservationNormalizer | None = None,
        analyzer_options: dict[str, Any] | None = None,
        fixed_workers: dict[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
        analyzer_state: dict[str, Any] | None = None,
    ):
        self.session, self.encoder, self.decoder, self.normalizer = session, encoder, decoder, normalizer
        self.analyzer_options = analyzer_options or {}
        self.fixed_workers = fixed_workers or {}
        self.metadata = metadata or {}
        # the analyzer fitted in training (StandardAnalyzer.to_dict), loaded by whoever runs the
        # planner instead of refitting it; None in a sidecar older than saved analyzers
        self.analyzer_state = analyzer_state
        # what training saw (policies.guard.TrainingRange as data): the registry guards the
        # planner with it; None in a sidecar older than the guard
        self.training_range: dict[str, Any] | None = self.metadata.get("training_range")
        self._input = session.get_inputs()[0].name
        expected = session.get_inputs()[0].shape[-1]
        if isinstance(expected, int) and expected != encoder.size:
            raise ValueError(f"ONNX model takes {expected} features; the sidecar's encoder makes {encoder.size}")

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> OnnxPlanner:
        """Load ``planner.onnx`` (or its directory) with the ``planner.json`` sidecar beside it.
        One intra-op thread by default: a decision is a small MLP, and threads cost more than
        they save at that size (and the host runs workers too)."""
        import onnxruntime as ort  # here, not at import: a module that only names the class stays light

        path, meta = read_export(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(
            session,
            ObservationEncoder.from_dict(meta["observation"]["encoder"]),
            ActionDecoder.from_dict(meta["action"]["decoder"]),
            ObservationNormalizer.from_dict(meta["observation"]["normalization"]),
            meta.get("analyzer"),
            meta.get("fixed_workers"),
            meta,
            meta.get("fitted_analyzer"),
        )

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Actions (int64, one row per observation) for raw encoded observations."""
        obs = np.asarray(observations, dtype=np.float32)
        return self._policy(obs[None, :] if obs.ndim == 1 else obs)

    def _policy(self, batch: np.ndarray) -> np.ndarray:
        """Normalize (as in training) and run the graph: a float32 batch of raw observations."""
        if self.normalizer is not None:
            batch = self.normalizer(batch)
        return self.session.run(None, {self._input: batch})[0]

    def plan(self, snapshot: MetricsSnapshot, insights: Insights) -> Plan:
        action = self._policy(self.encoder.encode(snapshot, insights)[None, :])[0]  # float32 already
        return self.decoder.plan_for(action, snapshot, self.fixed_workers)
