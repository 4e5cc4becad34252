"""Write a derived series as a NIfTI-1 volume (nibabel), the format research pipelines (MONAI) read.

The volume is read back from the derived DICOM files once they are written and verified
(``restore.io.dicom.discover`` and ``read_series_volume``), so it holds what a DICOM reader gets
from them: float32 HU for CT and rescaled values (modality LUT or rescale slope/intercept) for
other grey-scale modalities, in the geometry of the derived image (at ``sr-x2``: the finer grid).

Voxel ``(i, j, k)`` is column ``i`` and row ``j`` of slice ``k`` (slices in order along the slice
normal). Its centre in DICOM patient coordinates (LPS, mm) is::

    P + i * dc * X + j * dr * Y + k * S

``X``, ``Y`` the row and column direction cosines (ImageOrientationPatient), ``(dr, dc)``
PixelSpacing (row, column spacing), ``P`` the first slice's ImagePositionPatient and ``S`` the step
to the next slice, ``(P_last - P) / (n - 1)`` (so a gantry tilt comes out as the shear it is; one
slice: the normal times SpacingBetweenSlices or SliceThickness). NIfTI's world is RAS, DICOM's
LPS: the affine is ``diag(-1, -1, 1, 1)`` times that one, stored as the sform (and as the qform
when it has no shear, which a qform cannot hold), both "scanner" coordinates, units mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restore.atomic import atomic_path
from restore.io.dicom import Series, read_series_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_refusal(series: Series) -> str | None:
    """Why ``series`` (one stack) cannot be one NIfTI volume with one affine, or None."""
    if series.units == "RGB":
        return "no NIfTI volume: colour images"
    if not series.geometry.has_positions or series.first.pixel_spacing is None:
        return "no NIfTI volume: no patient geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing)"
    geometry = series.geometry
    if geometry.gaps or geometry.duplicates or geometry.uneven:
        return "no NIfTI volume: the slice positions are not evenly spaced (gaps, repeats or uneven steps)"
    return None


def nifti_affine(positions: np.ndarray, orientation, pixel_spacing, slice_step: float = 1.0) -> np.ndarray:
    """The 4 x 4 affine from voxel ``(i, j, k)`` (column, row, slice) to RAS mm.

    ``positions``: ``(Z, 3)`` ImagePositionPatient of the slices in order (LPS mm); ``orientation``:
    the 6 direction cosines; ``pixel_spacing``: (row, column) spacing mm; ``slice_step``: mm along
    the normal, used only for a single slice.
    """
    positions = np.asarray(positions, dtype=np.float64)
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        step = np.cross(row_dir, col_dir) * slice_step
    lps = np.eye(4)
    lps[:3, 0] = row_dir * float(pixel_spacing[1])  # along a row: the column index i grows
    lps[:3, 1] = col_dir * float(pixel_spacing[0])  # down a column: the row index j grows
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps


def write_nifti(series: Series, path: Path, description: str = "") -> None:
    """Write ``series`` (a stack that :func:`nifti_refusal` passes) to ``path`` (``.nii.gz``) atomically."""
    import nibabel as nib

    units = "HU" if series.units == "HU" else "rescaled"
    volume, info = read_series_volume(series, units)  # (Z, H, W) float32
    first = series.first.ref.read(stop_before_pixels=True)
    thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    affine = nifti_affine(info.positions, info.orientation, info.pixel_spacing, thickness)
    image = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine)  # -> (W, H, Z): (i, j, k)
    image.set_sform(affine, code="scanner")
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    if np.allclose(axes.T @ axes, np.eye(3), atol=1e-6):
        image.set_qform(affine, code="scanner")
    else:  # a qform is a rotation: it cannot hold a tilted stack's shear
        image.set_qform(None)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = description[:79].encode("ascii", "replace")
    path = Path(path)
    # nibabel picks the format from the name's ending: the temporary name keeps ".nii.gz"
    with atomic_path(path, path.with_name(f".{path.name.removesuffix('.nii.gz')}.partial.nii.gz")) as tmp:
        nib.save(image, tmp)
