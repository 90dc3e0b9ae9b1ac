"""Kubernetes' control path: KEDA's external scaler, answering with what the planner wants.

* :mod:`~adaptflow.runtime.keda.scaler`: the gRPC service (``KedaScaler``) and ``serve_keda``.
* :mod:`~adaptflow.runtime.keda.plans`: where its numbers come from (``LatestPlan``, the
  ``DecisionLoop`` that decides every interval, ``decision_loop_for``).
* ``externalscaler.proto``: KEDA's interface (Apache-2.0, The KEDA Authors), and the stubs
  generated from it (``externalscaler_pb2*.py``; how to regenerate them is in the proto).

Needs the ``keda`` extra (grpcio, protobuf). Nothing is imported here."""
