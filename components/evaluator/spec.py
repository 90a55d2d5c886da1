"""Config of the evaluator: fidelity, diversity and utility ([evaluator]). Privacy: privacy_spec.py ([privacy])."""
from __future__ import annotations

import dataclasses

from components.evaluator.privacy_spec import PrivacyConfig  # noqa: F401  (pipeline.config imports it from here)

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
    min_synthetic: int = F(default=1000, metadata={"range": (1, 10**7)})
