"""restore.dicom.nifti through `restore dicom --nifti`: the volume's affine and values."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from cli import main
from tests.dicom_study import ct_stack

# an oblique stack: rows turned 30 degrees about the patient's z axis, columns tilted 20 degrees
# out of the axial plane, rows and columns spaced differently, slices 2.5 mm apart along the normal
_A, _B = np.radians(30.0), np.radians(20.0)
ROW = np.array([np.cos(_A), np.sin(_A), 0.0])
COL = np.array([-np.sin(_A) * np.cos(_B), np.cos(_A) * np.cos(_B), -np.sin(_B)])
NORMAL = np.cross(ROW, COL)
SPACING = (0.7, 0.9)  # (row spacing, column spacing) mm
ORIGIN = np.array([-80.5, 12.25, 40.0])


@pytest.mark.parametrize(("task", "scale"), [("ct-denoise", 1), ("sr-x2", 2)])
def test_nifti_voxels_map_to_the_dicom_patient_position_of_their_pixel(tmp_path, task, scale):
    positions = [ORIGIN + 2.5 * k * NORMAL for k in range(3)]
    folder = tmp_path / "in"
    folder.mkdir()
    slices = ct_stack(positions, (*ROW, *COL), SPACING)
    for ds, name in zip(slices, ("b", "c", "a")):  # file names out of slice order
        ds.save_as(folder / name, enforce_file_format=True)
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    model = "identity" if scale == 1 else "bicubic"
    assert main(["dicom", str(folder), "-o", str(out), "--task", task, "--model", model, "--nifti", "-q",
                 "--report", str(report_path)]) == 0
    (series,) = json.loads(report_path.read_text())["series"]
    assert series["nifti"] == [f"{series['series_id']}/{series['series_id']}.nii.gz"] and series["notes"] == []

    image = nib.load(out / series["nifti"][0])
    data = np.asarray(image.dataobj)
    size = 128 * scale
    assert data.shape == (size, size, 3) and data.dtype == np.float32
    assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == 1  # scanner
    assert np.allclose(image.get_qform(), image.affine, atol=1e-4)  # a qform holds float32 quaternions
    # the centre of pixel (row j, column i) of slice k, in DICOM patient coordinates (LPS, mm); at
    # sr-x2 the first pixel's centre moved a quarter of an old pixel up and left, spacing halved
    dr, dc = SPACING[0] / scale, SPACING[1] / scale
    first = ORIGIN + (1 / scale - 1) / 2 * (SPACING[1] * ROW + SPACING[0] * COL)
    derived = sorted((pydicom.dcmread(p) for p in (out / series["series_id"]).glob("*.dcm")),
                     key=lambda d: float(np.dot(NORMAL, d.ImagePositionPatient)))
    for i, j, k in [(0, 0, 0), (size - 1, 0, 1), (5, size - 1, 2), (70, 33, 1)]:
        lps = first + 2.5 * k * NORMAL + i * dc * ROW + j * dr * COL
        ras = np.array([-lps[0], -lps[1], lps[2]])
        assert np.allclose(image.affine @ [i, j, k, 1.0], [*ras, 1.0], atol=1e-4), (i, j, k)
        # the value: the derived DICOM's pixel in HU
        hu = float(derived[k].pixel_array[j, i]) * float(derived[k].RescaleSlope) + float(derived[k].RescaleIntercept)
        assert data[i, j, k] == hu
    if scale == 1:  # identity: the source's HU, slice k shifted by 10 k
        source = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array - 1024.0
        assert np.array_equal(data.transpose(2, 1, 0), np.stack([source + 10 * k for k in range(3)]))
