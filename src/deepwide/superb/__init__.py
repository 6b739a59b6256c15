"""SUPERB evaluation through s3prl's recipes with deepwide encoders as upstreams.

Modules: ``compat`` (old torchaudio audio I/O that s3prl 0.4.18 needs; installed by
``problems`` before s3prl is imported), ``upstream`` (frozen upstreams: deepwide
checkpoints, HF directories, FBANK), ``tasks`` (task table, dataset-root checks),
``offline`` (files s3prl would download, written from the corpus), ``problems``
(s3prl problem subclasses), ``runner`` (one job), ``cli``. What the rules run is planned
in :mod:`deepwide.plan.superb`; importing this package is cheap (no torch).
"""
