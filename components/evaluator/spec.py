"""Config of the evaluator: fidelity/diversity/utility ([evaluator]) and privacy/release gate ([privacy])."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
    min_synthetic: int = F(default=1000, metadata={"range": (1, 10**7)})


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    enabled: bool = True
