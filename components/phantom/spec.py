"""Config of the phantom cohort generator (synthetic sagittal spine MRI with vertebra masks)."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    patients: int = F(default=20, metadata={"range": (1, 100000), "help": "number of patients (one scan each)"})
    seed: int = F(default=0, metadata={"range": (0, 2**31 - 1)})
