"""Config of the synthesize component (the shareable synthetic dataset)."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class SynthesizeConfig:
    units_per_class: int = F(default=100, metadata={"range": (1, 10**7), "help": "synthetic units drawn per class"})
    seed: int = F(default=1234, metadata={"range": (0, 2**31 - 1),
                                          "help": "base seed; class c draws with a seed derived from (seed, c)"})
    use_ema: bool = F(default=True, metadata={
        "help": "the generator variant released AND judged: EMA when the trainer kept one, else raw"})
    release_filter: bool = F(default=False, metadata={
        "help": "drop near-copies of training units from the release, then judge the filtered set (recorded)"})
    shards: int = F(default=1, metadata={"range": (1, 4096), "help": "TFRecord shards in Split-synthetic/"})
    write_nifti: bool = F(default=True, metadata={"help": "also write one NIfTI file per unit under nifti/"})
    preview_units: int = F(default=16, metadata={"range": (0, 256),
                                                 "help": "units per class shown in previews/<class>.png"})
    batch_size: int = F(default=256, metadata={"range": (1, 65536), "help": "units generated per forward pass"})
