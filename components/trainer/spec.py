"""Config of the ac-GAN trainer."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    steps: int = F(default=1000, metadata={"range": (0, 10**9), "help": "total generator steps"})
    batch_size: int = F(default=32, metadata={"range": (1, 65536), "help": "global batch size"})
