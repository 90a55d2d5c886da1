"""Config of the phantom cohort generator (synthetic sagittal spine MRI with vertebra masks)."""
from __future__ import annotations

import dataclasses

F = dataclasses.field

_AXES = ({"L", "R"}, {"A", "P"}, {"S", "I"})


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    patients: int = F(default=20, metadata={"range": (1, 100000), "help": "number of patients (one scan each)"})
    seed: int = F(default=0, metadata={"range": (0, 2**31 - 1),
                                       "help": "cohort seed; patient i draws from numpy Generator((seed, i))"})
    slices: int = F(default=20, metadata={"range": (3, 64), "help": "sagittal slices per scan"})
    slice_spacing_mm: float = F(default=3.0, metadata={"range": (0.5, 10.0),
                                                       "help": "left-right distance between sagittal slices (mm)"})
    inplane_spacing_mm: tuple[float, float] = F(default=(1.1, 1.3), metadata={
        "range": (0.3, 5.0), "help": "in-plane (A-P, S-I) voxel size is drawn per scan from [lo, hi] (mm)"})
    max_voxels: int = F(default=3_000_000, metadata={
        "range": (100_000, 100_000_000),
        "help": "a scan larger than this at the drawn spacing gets coarser in-plane voxels until it fits"})
    partial_fov_fraction: float = F(default=0.5, metadata={
        "range": (0.0, 1.0),
        "help": "share of scans covering only part of the spine (cervico-thoracic, thoracic, thoraco-lumbar, lumbar)"})
    t2_fraction: float = F(default=0.5, metadata={"range": (0.0, 1.0), "help": "share of T2-like scans (rest T1-like)"})
    reorient_fraction: float = F(default=0.3, metadata={
        "range": (0.0, 1.0), "help": "share of scans stored in a non-RAS array layout (see other_layouts)"})
    other_layouts: tuple[str, ...] = F(default=("LPS", "PIR", "IPR", "ASL"), metadata={
        "help": "array axis codes used for reoriented scans (nibabel aff2axcodes style, e.g. 'LPS')"})
    noise: float = F(default=0.03, metadata={
        "range": (0.0, 0.5), "help": "Rician noise sigma relative to the brightest tissue"})
    bias: float = F(default=0.25, metadata={
        "range": (0.0, 1.0), "help": "strength of the smooth multiplicative bias field (0: none)"})
    dtype: str = F(default="int16", metadata={"choices": ("int16", "uint8"), "help": "stored voxel type of images"})
    preview_patients: int = F(default=6, metadata={"range": (0, 24), "help": "patients shown in preview.png"})

    def validate(self) -> None:
        lo, hi = self.inplane_spacing_mm
        if not lo <= hi:
            raise ValueError(f"inplane_spacing_mm {self.inplane_spacing_mm}: the first must not exceed the second")
        for code in self.other_layouts:
            if len(code) != 3 or sorted(_axis_of(c) for c in code) != [0, 1, 2]:
                raise ValueError(f"other_layouts: {code!r} is not an axis code such as 'LPS' or 'PIR' "
                                 "(one letter of L/R, A/P and S/I each)")


def _axis_of(letter: str) -> int:
    for i, ax in enumerate(_AXES):
        if letter in ax:
            return i
    return 9
