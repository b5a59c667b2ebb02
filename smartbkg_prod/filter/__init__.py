"""The NN filter (after SmartBKG, Kahn et al.): drop or importance-sample generated events
before the expensive simulation.

One concept per module:

* :mod:`encoding` — PDG vocabulary and feature scaling, stored with the model;
* :mod:`inputs` — events -> the named input arrays of the exported model (numpy), one
  builder per model kind; :mod:`runtime` — scoring on ONNX Runtime (the worker's: no
  torch); :mod:`apply` — ``run_filter``, the worker's entry point;
* :mod:`artifact` — the model files (.pt, .onnx, .json sidecar) and the worker's checks;
* training side (torch, the ``[train]`` extra): :mod:`graph` — block-diagonal decay-tree
  graphs as tensors; :mod:`model` — the GCN; :mod:`checkpoint` — save (with the ONNX
  export) and load the ``.pt``; :mod:`infer` — batched torch scoring;
* :mod:`sampling` — cut and importance-sampling decisions and weights;
* :mod:`metrics` — AUC, speedup formulas, bias tests; :mod:`evaluate` — the full report;
* :mod:`data` — labelled events (campaign outputs or in-process chain); :mod:`train`.
"""
