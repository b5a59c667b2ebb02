"""Physics layer: Pythia generation, fast detector simulation, hadronic B-tag skim, ROOT I/O.

Data flows as columnar batches: ``events.ParticleBatch`` (MC truth) ->
``detector.simulate`` -> ``detector.RecoBatch`` -> ``skim.skim`` -> ``skim.SkimResult`` ->
``rootio.write_output``. Import from the submodules: this package imports nothing itself,
so code that only needs ``ParticleBatch`` (the NN filter on a GPU node) does not pull in
Pythia or uproot.
"""
