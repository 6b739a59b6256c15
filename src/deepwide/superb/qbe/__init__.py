"""Query-by-Example spoken term detection by DTW, as SUPERB runs it (QUESST 2014).

No training: one hidden layer of a frozen upstream represents every query and document;
each (query, document) pair gets a score from a subsequence DTW (the query may start and
end anywhere in the document) and the scores are judged by MTWV, the maximum over
detection thresholds of the term-weighted value.

SUPERB's recipe (s3prl ``quesst14_dtw``), followed here with our own code:

- audio: mono, 16 kHz, gain -3 dB (s3prl's sox effects);
- features: one layer; standardised with the mean/std of all query and document frames
  of that layer (``normalize="global"``, s3prl's ``feature_normalization``) or per
  utterance (``"utterance"``) or not at all (``"none"``);
- distance: cosine distance, mapped by ``exp(d) - 1`` (``cosine_exp``, s3prl's default)
  or left as is (``cosine``); then min-max normalised along each query frame's row
  (per document);
- DTW: asymmetric steps (the query index advances by one per step, the document index by
  0, 1 or 2), open begin and open end; cost = best path cost / query frames; score =
  -cost; queries shorter than 5 frames score 0 everywhere; each query's scores are
  z-normalised over the documents;
- MTWV over the official ground truth (``scoring/groundtruth_quesst14_{dev,eval}``: ecf,
  tlist, rttm): the term-averaged value ``1 - P_miss - beta * P_FA`` maximised over
  thresholds, averaging over every term of the tlist that occurs in the rttm (trials
  that were not scored, e.g. non-English queries, count as never detected, as the
  official scorer does with its default score). ``beta`` defaults to 999.9 (NIST STD
  2006: C/V = 0.1, P_target = 1e-4); the MediaEval QUESST scorer's own cost setting
  was not verifiable offline, so the NIST ``stdlist.xml`` files written beside the
  result can be re-scored with the dataset's ``scoring/score-TWV-Cnxe.sh DIR
  groundtruth_quesst14_eval -10`` (Java) for numbers comparable with published ones.
- layer choice: a given layer, or the layer with the best dev MTWV (``select_on_dev``);
  the test score is the eval-query MTWV at that layer.

The DTW runs vectorised over documents and document frames (one tensor step per query
frame, documents bucketed by length), on CUDA when available; tests check it against
dtw-python (the library s3prl's recipe calls) with SUPERB's settings.

Modules: ``features`` (audio, extractors, the feature store), ``dtw`` (distances and the
subsequence DTW), ``twv`` (TWV, MTWV, NIST stdlist.xml; no torch), ``quesst`` (QUESST14 data,
layer evaluation, result.json), ``cli`` (``python -m deepwide superb qbe --upstream CKPT
--root QUESST_ROOT --layer L|--select-on-dev --out .../result.json``; building its parser
imports no torch). Importing this package imports nothing.
"""

from __future__ import annotations

