"""Every vugan component, in pipeline order: what ``vugan`` offers and what ``vugan run`` runs.

Each entry is a component's contract (``components/<name>/component.py``). ``pipeline.registry.Registry`` checks
the list: names and config sections defined once, and every pipeline step's inputs made by an earlier step.
Components that run alone (``in_pipeline=False``) may sit anywhere; their place only orders ``vugan --help``.
"""
from __future__ import annotations

from vugan.components.evaluator.audit_component import SPEC as AUDIT
from vugan.components.evaluator.component import SPEC as EVALUATE
from vugan.components.exporter.component import SPEC as EXPORT
from vugan.components.phantom.component import SPEC as PHANTOM
from vugan.components.preprocess.component import SPEC as PREPROCESS
from vugan.components.synthesize.component import SPEC as SYNTHESIZE
from vugan.components.trainer.component import SPEC as TRAIN
from vugan.pipeline.registry import Registry

# The order of the config sections in every config.toml follows this list too (phantom, preprocess, trainer,
# evaluator, privacy, synthesize, exporter), so reordering it changes the bytes of written configs.
REGISTRY = Registry((PHANTOM, PREPROCESS, TRAIN, EVALUATE, SYNTHESIZE, EXPORT, AUDIT))
