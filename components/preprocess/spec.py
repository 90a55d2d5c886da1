"""Config of the preprocess component (MRI volumes -> vertebral-unit crops in TFRecords)."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    unit: str = F(default="disc", metadata={"choices": ("disc", "vertebra"), "help": "disc-centred VU or body-centred"})
    conditioning: str = F(default="region", metadata={"choices": ("region", "level")})
    slices: int = F(default=9, metadata={"range": (1, 64), "help": "K parasagittal slices per unit"})
    image_size: tuple[int, int] = F(default=(64, 64), metadata={"range": (8, 1024), "help": "H, W of each crop"})
    split_fractions: tuple[float, float, float] = F(default=(0.6, 0.2, 0.2), metadata={"range": (0.0, 1.0)})
    salt: str = F(default="", metadata={"help": "pseudonymisation salt; empty: $VUGAN_SALT, else a per-output random salt"})

    def validate(self) -> None:
        if abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions {self.split_fractions} must sum to 1 (train, holdout, test)")
