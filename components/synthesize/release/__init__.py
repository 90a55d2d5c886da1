"""The release's home: what is released is what was judged.

One chain, read in one place. The evaluator stages the release candidate and judges it (``candidate.py``), the
release gate's :class:`Verdict` goes to ``verdict.json`` (``verdict.py``, its only writer and reader) together with
the release it judged (``chain.py``); synthesize publishes the candidate only when the chain matches and the verdict
passed or the release is forced. The datasheet's headline metrics are the evaluator's (``headline.py``).

Dependencies run one way: the evaluator imports this package (and through it synthesize's unit writer);
synthesize never imports the evaluator. The pipeline reaches it only through the components' declared hooks.
"""
from vugan.components.synthesize.release.candidate import (CANDIDATE, FILTER_FILE, candidate_digest,
                                                           candidate_sampler, read_filter, stage_candidate,
                                                           write_filter)
from vugan.components.synthesize.release.chain import (check_release, generator_variant, now, refusal,
                                                       release_decision, release_spec)
from vugan.components.synthesize.release.headline import headline_metrics, read_metrics, select_headline
from vugan.components.synthesize.release.verdict import (VERDICT_FILE, ReleaseMismatch, ReleaseRefused, Verdict,
                                                         read_verdict, verdict_word, write_verdict)

__all__ = ["CANDIDATE", "FILTER_FILE", "VERDICT_FILE", "ReleaseMismatch", "ReleaseRefused", "Verdict",
           "candidate_digest", "candidate_sampler", "check_release", "generator_variant", "headline_metrics", "now",
           "read_filter", "read_metrics", "read_verdict", "refusal", "release_decision", "release_spec",
           "select_headline", "stage_candidate", "verdict_word", "write_filter", "write_verdict"]
