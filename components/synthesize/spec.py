"""Config of the synthesize component (the shareable synthetic dataset)."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class SynthesizeConfig:
    units_per_class: int = F(default=100, metadata={"range": (1, 10**7)})
    seed: int = F(default=1234, metadata={"range": (0, 2**31 - 1)})
