"""The registry: which components exist, and in what order ``vugan run`` runs its steps.

The pipeline knows no component by name. The list lives with the components (``components/registry.py``, a
:class:`Registry` named ``REGISTRY``); the CLI, the runner and the config loader get it from :func:`components`.
``$VUGAN_COMPONENTS`` names another module holding a ``REGISTRY`` (the children of ``vugan run`` inherit it): how
the tests drive the machinery with toy components, and how a project would add its own.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from typing import Any

# The specs are pipeline.component.ComponentSpec objects; that module is not imported here, not even for
# annotations: pipeline.config reads this registry and pipeline.component reads the config, so it would be a circle.
ComponentSpec = Any

DEFAULT_MODULE = "vugan.components.registry"
ENV = "VUGAN_COMPONENTS"
RESERVED = ("run", "runs")  # the pipeline's own sub-commands, and its own config section ("run")


@dataclasses.dataclass(frozen=True)
class Registry:
    """The component specs, in pipeline order: each step's inputs come from earlier steps."""

    specs: tuple[ComponentSpec, ...]

    def __post_init__(self):
        names = [s.name for s in self.specs]
        for name in names:
            if names.count(name) > 1 or name in RESERVED:
                raise ValueError(f"component name {name!r} is taken (twice, or by the pipeline: {RESERVED})")
        defined: dict[str, str] = {}
        for spec in self.specs:
            for section in spec.config_classes:
                if section in defined or section in RESERVED:
                    raise ValueError(f"config section [{section}] of {spec.name} is already defined by "
                                     f"{defined.get(section, 'the pipeline')}")
                defined[section] = spec.name
        for spec in self.specs:
            missing = [s for s in spec.config_sections if s not in defined and s not in RESERVED]
            if missing:
                raise ValueError(f"component {spec.name} reads config section [{missing[0]}], which no component "
                                 "defines (ComponentSpec.config_classes)")
        made: dict[str, str] = {}  # artifact type -> the step making it
        for spec in self.pipeline:
            for inp, wanted in spec.inputs.items():
                if wanted.value not in made:
                    raise ValueError(f"pipeline step {spec.name}: input {inp} ({wanted.value}) is made by no "
                                     "earlier step; list its producer before it")
            if spec.artifact_type.value in made:
                raise ValueError(f"pipeline steps {made[spec.artifact_type.value]} and {spec.name} both make "
                                 f"{spec.artifact_type.value}; a run folder needs one producer per type")
            made[spec.artifact_type.value] = spec.name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def pipeline(self) -> tuple[ComponentSpec, ...]:
        """The steps of ``vugan run``, in order."""
        return tuple(s for s in self.specs if s.in_pipeline)

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.pipeline)

    @property
    def producers(self) -> dict[str, str]:
        """Artifact type -> the step producing it (how input names map to run sub-folders)."""
        return {s.artifact_type.value: s.name for s in self.pipeline}

    @property
    def config_classes(self) -> dict[str, type]:
        """[section] -> its dataclass, in the order of the specs (the order of every written config.toml)."""
        return {name: cls for spec in self.specs for name, cls in spec.config_classes.items()}

    def spec(self, name: str) -> ComponentSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise ValueError(f"{name}: no such component; known: {', '.join(self.names)}")


def components() -> Registry:
    """The registry in use: ``$VUGAN_COMPONENTS``'s, else the installed components'."""
    return _load(os.environ.get(ENV) or DEFAULT_MODULE)


@functools.lru_cache(maxsize=None)
def _load(module: str) -> Registry:
    registry = getattr(importlib.import_module(module), "REGISTRY", None)
    if not isinstance(registry, Registry):
        raise ValueError(f"{module} holds no REGISTRY of type pipeline.registry.Registry (${ENV})")
    return registry
