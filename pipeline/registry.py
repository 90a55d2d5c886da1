"""The component registry: CLI name -> the module exposing its ``SPEC``.

Both the command line (``pipeline.cli``) and the sequential pipeline (``pipeline.runner``) look components up
here, so neither imports the other.
"""
from __future__ import annotations

import importlib

# CLI name -> module exposing SPEC (and optionally add_arguments / options_from_args / ACCEPTS_EXTRA_ARGS).
COMPONENT_MODULES = {
    "phantom": "vugan.components.phantom.run",
    "preprocess": "vugan.components.preprocess.run",
    "train": "vugan.components.trainer.run",
    "evaluate": "vugan.components.evaluator.run",
    "synthesize": "vugan.components.synthesize.run",
    "export": "vugan.components.exporter.run",
    "audit": "vugan.components.evaluator.audit",
}


def component_module(name: str):
    return importlib.import_module(COMPONENT_MODULES[name])


def component_spec(name: str):
    return component_module(name).SPEC
