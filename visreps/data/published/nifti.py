"""NIfTI volumes, FreeSurfer label tables (.ctab) and ROI definitions of the NSD atlases.

An NSD ROI volume (``roi/<atlas>.nii.gz``) holds one integer label per voxel (-1 outside the brain,
0 unlabelled); its label table ``<atlas>.mgz.ctab`` lists ``index name [R G B A]`` per line. A region
of visreps is a union of labels of one atlas (V1 = V1v ∪ V1d of ``prf-visualrois``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from visreps.data.base import DatasetError


@dataclass(frozen=True)
class RegionSpec:
    """A named region: the union of ``labels`` of the atlas ``atlas``."""

    name: str
    atlas: str
    labels: tuple[str, ...]


#: the regions of the study (both hemispheres; the atlas files without lh./rh. prefix hold both)
NSD_REGIONS: dict[str, RegionSpec] = {
    spec.name: spec
    for spec in (
        RegionSpec("early", "streams", ("early",)),
        RegionSpec("ventral", "streams", ("ventral",)),
        RegionSpec("V1", "prf-visualrois", ("V1v", "V1d")),
        RegionSpec("V2", "prf-visualrois", ("V2v", "V2d")),
        RegionSpec("V3", "prf-visualrois", ("V3v", "V3d")),
        RegionSpec("hV4", "prf-visualrois", ("hV4",)),
        RegionSpec("FFA", "floc-faces", ("FFA-1", "FFA-2")),
        RegionSpec("PPA", "floc-places", ("PPA",)),
    )
}


def parse_region(name: str) -> RegionSpec:
    """A known region name (``NSD_REGIONS``) or an explicit ``<atlas>:<label>[+<label>...]`` (e.g. ``floc-bodies:EBA``)."""
    if name in NSD_REGIONS:
        return NSD_REGIONS[name]
    if ":" in name:
        atlas, _, labels = name.partition(":")
        parts = tuple(label.strip() for label in labels.split("+") if label.strip())
        if atlas.strip() and parts:
            return RegionSpec(name, atlas.strip(), parts)
    raise DatasetError(
        f"unknown region {name!r}; use one of {', '.join(NSD_REGIONS)} or '<atlas>:<label>[+<label>]' "
        "with an atlas of nsddata/ppdata/subjNN/func1pt8mm/roi/ (e.g. 'floc-bodies:EBA')"
    )


def read_ctab(path: str | Path) -> dict[str, int]:
    """Label name -> integer index from a FreeSurfer colour table (``index name [R G B A]`` lines)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"label table {path} does not exist")
    table: dict[str, int] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        try:
            index = int(parts[0])
        except ValueError:
            raise DatasetError(
                f"label table {path} line {number} ({stripped!r}) does not start with an integer index; "
                "expected 'index name' lines"
            ) from None
        if len(parts) < 2:
            raise DatasetError(f"label table {path} line {number} has an index but no name")
        table[parts[1]] = index
    if not table:
        raise DatasetError(f"label table {path} is empty; download it again")
    return table


def load_volume(path: str | Path, what: str) -> np.ndarray:
    """The data of a NIfTI file as a float array in (X, Y, Z[, ...]) order; DatasetError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what}: file {path} does not exist")
    try:
        return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as error:  # nibabel raises many types (ImageFileError, EOFError, zlib errors)
        raise _unreadable(path, what, error) from None


def volume_shape(path: str | Path, what: str) -> tuple[int, ...]:
    """The (X, Y, Z) shape from a NIfTI header, without reading the data."""
    try:
        return tuple(int(s) for s in nib.load(str(path)).shape[:3])
    except Exception as error:
        raise _unreadable(path, what, error) from None


def _unreadable(path: Path, what: str, error: Exception) -> DatasetError:
    """The error for a NIfTI file nibabel cannot read: which file, that it is truncated or corrupt, the fix."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "Cannot work out file type" in detail:
        detail = "no NIfTI header"
    return DatasetError(f"{what}: {path} is truncated or corrupt ({size} bytes, {detail}); it is not a readable NIfTI "
                        "file: download it again")


def region_mask(atlas: np.ndarray, table: dict[str, int], spec: RegionSpec, table_path: Path) -> np.ndarray:
    """Boolean (X, Y, Z) mask of the voxels labelled with any of ``spec.labels``."""
    missing = [label for label in spec.labels if label not in table]
    if missing:
        raise DatasetError(
            f"region {spec.name!r}: label {missing[0]!r} is not in the label table {table_path} "
            f"(it lists: {', '.join(table)})"
        )
    values = np.rint(atlas).astype(np.int64)
    return np.isin(values, [table[label] for label in spec.labels])
