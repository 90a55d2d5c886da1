"""Config of the exporter (generator SavedModel)."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class ExporterConfig:
    use_ema: bool = F(default=True, metadata={"help": "export the EMA generator when the trainer kept one"})
    # ~0.2 MB of output per unit: the bound keeps one request from asking for unbounded memory on the server.
    max_batch: int = F(default=1024, metadata={"range": (1, 1_000_000),
                                                "help": "most class ids one serving request may ask for"})
