"""The NN filter (after SmartBKG, Kahn et al.): drop or importance-sample generated events
before the expensive simulation.

One concept per module:

* :mod:`graph` — events -> block-diagonal decay-tree graphs (tensor ops, CPU or CUDA);
* :mod:`model` — the GCN; :mod:`artifact` — the model file, its metadata and checks;
* :mod:`infer` — batched scoring, model cached per process; :mod:`apply` — ``run_filter``,
  the worker's entry point;
* :mod:`sampling` — cut and importance-sampling decisions and weights;
* :mod:`metrics` — AUC, speedup formulas, bias tests; :mod:`evaluate` — the full report;
* :mod:`data` — labelled events (campaign outputs or in-process chain); :mod:`train`.
"""
