"""SUPERB evaluation through s3prl's recipes with deepwide encoders as upstreams.

Modules: ``tasks`` (one module per task and the registry: corpus, metric, root checks,
s3prl quirks), ``compat`` (every patch s3prl needs, installed by ``problems`` before s3prl
is imported), ``upstream`` (frozen upstreams: deepwide checkpoints, HF directories, FBANK),
``offline`` (files s3prl would download, written from the corpus), ``problems`` (s3prl
problem subclasses), ``sweep`` (several heads on one upstream pass), ``runner`` (one job),
``der`` (offline SD scoring), ``items`` (per-item test results), ``qbe`` (QbE by DTW),
``cli``. What the rules run is planned in :mod:`deepwide.plan.superb`; importing this
package and ``tasks`` is cheap (no torch): the planner reads the registry at DAG time.
"""
