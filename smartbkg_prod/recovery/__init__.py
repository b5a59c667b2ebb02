"""Recovery of failed jobs: failure codes in, reviewed actions out, decisions learned.

The flow, one module per step::

    taxonomy    worker / HTCondor / Slurm / PanDA / WMCore / signal codes -> category, transient
    symptoms    what log text and resource use say when a code names no cause
    failures    FailureRecord: one attempt (from a JobReport, the store, or a JSON-lines export)
    features    per failed job: the attempt, its job's history, its campaign's code x site picture
    rules       cold-start policy (what an operator does), and the baseline to beat
    classifier  random forest trained on operators' decisions (noisy labels)
    recommend   one Recommendation per failed job: action, confidence, reason, RetryChanges
    actions     the actions and the retry changes each implies
    records     all of recovery's store access (recommendations, decisions, overrides, splits):
                the queries of store.recovery, turned into recovery's types
    review      refresh, accept / override (stored as labels), train, evaluate
    apply       carry out decided actions in the store with exact event accounting
    cases       the independent operator corpus that scores rules and classifier

A driver reads ``store.campaigns.job_overrides`` and ``store.campaigns.split_jobs``
(:class:`~smartbkg_prod.store.campaigns.Campaigns`) to run what ``recover apply`` changed;
``smartbkg-prod recover ...`` is the command line.
"""
