"""Config of the preprocess component (MRI volumes -> vertebral-unit crops in TFRecords).

Every field carries its allowed values (``range``/``choices``) and a ``help`` sentence; ``validate`` holds the
cross-field rules. Physical sizes are in millimetres so that scans of any voxel size give comparable crops.
"""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    unit: str = F(default="disc", metadata={"choices": ("disc", "vertebra"), "help": "disc-centred VU or body-centred"})
    conditioning: str = F(default="region", metadata={"choices": ("region", "level"),
                                                      "help": "class label: spine region (3) or unit level"})
    slices: int = F(default=9, metadata={"range": (1, 64), "help": "K parasagittal slices per unit"})
    slice_spacing_mm: float = F(default=3.0, metadata={"range": (0.1, 20.0),
                                                       "help": "distance between parasagittal slices (mm)"})
    image_size: tuple[int, int] = F(default=(64, 64), metadata={"range": (8, 1024), "help": "H, W of each crop"})
    margin: float = F(default=0.15, metadata={
        "range": (0.0, 2.0),
        "help": "crop height = unit length x (1 + 2 margin); unit length = distance between the two body centres"})
    width_scale: float = F(default=1.3, metadata={
        "range": (0.1, 10.0),
        "help": "crop width (mm) = crop height x width_scale x W/H; >1 keeps the canal and prevertebral edge in view"})
    max_outside_fraction: float = F(default=0.01, metadata={
        "range": (0.0, 1.0), "help": "a crop with more of its samples outside the volume is rejected"})
    intensity_percentiles: tuple[float, float] = F(default=(1.0, 99.0), metadata={
        "range": (0.0, 100.0), "help": "per-scan robust window mapped to [-1, 1] (then clipped)"})
    normalise_on: str = F(default="volume", metadata={
        "choices": ("bodies", "volume"),
        "help": "percentiles over the vertebral-body voxels (mask; falls back to volume without one) or all voxels"})
    centroid_source: str = F(default="auto", metadata={
        "choices": ("auto", "mask", "json"),
        "help": "where body centres come from; auto: the mask when the manifest gives one, else the centroid json"})
    split_fractions: tuple[float, float, float] = F(default=(0.6, 0.2, 0.2), metadata={
        "range": (0.0, 1.0), "help": "patient fractions for train, holdout, test"})
    split_seed: int = F(default=0, metadata={"range": (0, 2**31 - 1), "help": "seed of the patient ordering hash"})
    salt_file: str = F(default="", metadata={
        "help": "file whose first line is the pseudonymisation salt; empty: $VUGAN_SALT, else a random salt per "
                "output. The salt itself is never taken from config or the command line, nor written anywhere"})
    max_voxels: int = F(default=0, metadata={
        "range": (0, None), "help": "a scan with more voxels (read from its header first) is a dead letter; "
                                    "0: sized to this machine (physical memory / 64 bytes)"})
    grid_tolerance_mm: float = F(default=0.5, metadata={
        "range": (0.0, 100.0), "help": "mask and image grids must agree in world space within this (mm), "
                                       "checked at the eight corners of the grid"})
    max_stray_fraction: float = F(default=0.02, metadata={
        "range": (0.0, 1.0), "help": "a label whose parts other than its largest hold more of its voxels is a "
                                     "dead letter for that level; smaller specks are left out of its centre"})
    body_volume_ml: tuple[float, float] = F(default=(0.1, 300.0), metadata={
        "range": (0.0, None), "help": "plausible volume (ml) of one labelled vertebra; outside it the level is a "
                                      "dead letter"})
    shards_per_split: int = F(default=1, metadata={
        "range": (0, 4096), "help": "TFRecord shards per split; 0 lets the runner decide"})
    preview_units: int = F(default=6, metadata={"range": (0, 64), "help": "units per class in previews/<class>.png"})
    accept_burned_in: bool = F(default=False, metadata={
        "help": "use DICOM series flagged BurnedInAnnotation = YES (text drawn into the pixels, e.g. names) instead "
                "of refusing them as dead letters; recorded in the Examples artifact and the synthetic datasheet"})
    direct_num_workers: int = F(default=1, metadata={
        "range": (0, 256), "help": "DirectRunner workers (0: one per CPU); ignored by other runners"})
    direct_running_mode: str = F(default="in_memory", metadata={
        "choices": ("in_memory", "multi_threading", "multi_processing"), "help": "DirectRunner execution mode"})

    # Not a field: refused with this reason wherever it is given (pipeline.config), never echoing the value.
    REFUSED_KEYS = {
        "salt": "a salt is never taken from config or the command line (it would stay in shell history, "
                "config.toml and run.json); export VUGAN_SALT or set preprocess.salt_file to a file holding it",
    }

    def validate(self) -> None:
        if abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions {self.split_fractions} must sum to 1 (train, holdout, test)")
        lo, hi = self.intensity_percentiles
        if not lo < hi:
            raise ValueError(f"intensity_percentiles {self.intensity_percentiles}: the first must be below the second")
        if not self.body_volume_ml[0] < self.body_volume_ml[1]:
            raise ValueError(f"body_volume_ml {self.body_volume_ml}: the first must be below the second")
