"""Config of the exporter (generator SavedModel)."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class ExporterConfig:
    use_ema: bool = F(default=True, metadata={"help": "export the EMA generator when the trainer kept one"})
