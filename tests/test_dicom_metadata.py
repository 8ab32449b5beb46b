"""``read_dicom_metadata``: clinical fields apart from identifying ones, plain values, pixels never decoded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from synthetic import write_dicom

import medfew.data.readers.sniff as sniff_module
from medfew.data.readers import DicomMetadata, ImageMeta, load_image, load_image_with_meta, read_dicom_metadata
from medfew.diagnosis import load_input
from medfew.errors import ImageReadError, MedfewError

PHI = {
    "PatientName": "Doe^Jane^Q",
    "PatientID": "MRN-778899",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC123",
    "InstitutionName": "St. Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Wilson^James",
    "StudyDate": "20240102",
    "SeriesDate": "20240102",
    "AcquisitionDate": "20240102",
    "OtherPatientIDs": "ALT-1",
}


CT_FIELDS = {
    "StudyInstanceUID": "1.2.3.4.5.6",
    **PHI,
    "BodyPartExamined": "CHEST",
    "ViewPosition": "",
    "Manufacturer": "ACME",
    "PixelSpacing": [0.5, 0.625],
    "WindowCenter": [40, -600],
    "WindowWidth": [400, 1500],
    "RescaleSlope": 1,
    "RescaleIntercept": -1024,
}


def make_ct(tmp_path: Path, name: str = "ct.dcm", **extra: object) -> Path:
    """A 16 x 16 signed 16-bit CT carrying ``PHI`` and the clinical ``CT_FIELDS`` (``extra`` set last)."""
    return write_dicom(tmp_path / name, np.zeros((16, 16), dtype=np.int16), **{**CT_FIELDS, **extra})


def test_identifying_and_clinical_are_apart(tmp_path: Path) -> None:
    meta = read_dicom_metadata(make_ct(tmp_path))
    assert isinstance(meta, DicomMetadata)
    for key, value in PHI.items():
        assert meta.identifying[key] == value
        assert key not in meta.clinical
    assert meta.identifying["StudyInstanceUID"] == "1.2.3.4.5.6"
    assert meta.clinical["Modality"] == "CT"
    assert meta.clinical["BodyPartExamined"] == "CHEST"
    assert meta.clinical["Rows"] == 16 and meta.clinical["Columns"] == 16
    assert meta.clinical["PixelSpacing"] == [0.5, 0.625]
    assert meta.clinical["PhotometricInterpretation"] == "MONOCHROME2"
    assert meta.clinical["BitsStored"] == 16
    assert meta.clinical["WindowCenter"] == [40.0, -600.0]
    assert meta.clinical["WindowWidth"] == [400.0, 1500.0]
    assert meta.clinical["TransferSyntaxUID"] == ExplicitVRLittleEndian
    assert meta.clinical["TransferSyntax"] == "Explicit VR Little Endian"
    assert meta.clinical["Manufacturer"] == "ACME"
    assert "ViewPosition" not in meta.clinical  # empty values are left out
    assert meta.modality == "CT" and meta.n_frames == 1


def test_values_are_plain_python(tmp_path: Path) -> None:
    meta = read_dicom_metadata(make_ct(tmp_path))
    for value in meta.identifying.values():
        assert type(value) is str
    for key, value in meta.clinical.items():
        items = value if isinstance(value, list) else [value]
        assert all(type(v) in (str, int, float) for v in items), (key, value)
    json.dumps(meta.to_dict(include_identifiers=True))


def test_to_dict_hides_identifiers_unless_asked(tmp_path: Path) -> None:
    meta = read_dicom_metadata(make_ct(tmp_path))
    public = meta.to_dict()
    assert public["Modality"] == "CT"
    assert not set(PHI) & set(public)
    assert "StudyInstanceUID" not in public
    full = meta.to_dict(include_identifiers=True)
    assert full["PatientName"] == "Doe^Jane^Q" and full["Modality"] == "CT"
    public["Modality"] = "MR"  # a copy
    assert meta.clinical["Modality"] == "CT"


def test_repr_does_not_leak_identifiers(tmp_path: Path) -> None:
    text = repr(read_dicom_metadata(make_ct(tmp_path)))
    assert "Doe" not in text and "MRN-778899" not in text
    assert "CT" in text


def test_pixels_are_never_decoded(tmp_path: Path) -> None:
    # Pixel data that no decoder could read (garbage under a JPEG-LS syntax): the header still reads.
    path = make_ct(tmp_path, "undecodable.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.80"
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    meta = read_dicom_metadata(path)
    assert meta.clinical["TransferSyntax"] == "JPEG-LS Lossless Image Compression"
    assert meta.clinical["Rows"] == 16


def test_enhanced_functional_groups_fill_window_and_spacing(tmp_path: Path) -> None:
    voi = Dataset()
    voi.WindowCenter = 300
    voi.WindowWidth = 600
    measures = Dataset()
    measures.PixelSpacing = [0.8, 0.8]
    measures.SliceThickness = 1.5
    shared = Dataset()
    shared.FrameVOILUTSequence = Sequence([voi])
    shared.PixelMeasuresSequence = Sequence([measures])
    path = make_ct(tmp_path, "enh.dcm", SharedFunctionalGroupsSequence=Sequence([shared]))
    ds = pydicom.dcmread(path)
    for key in ("WindowCenter", "WindowWidth", "PixelSpacing"):
        delattr(ds, key)
    ds.save_as(path, enforce_file_format=True)
    meta = read_dicom_metadata(path)
    assert meta.clinical["WindowCenter"] == 300.0 and meta.clinical["WindowWidth"] == 600.0
    assert meta.clinical["PixelSpacing"] == [0.8, 0.8] and meta.clinical["SliceThickness"] == 1.5


def test_bytes_input(tmp_path: Path) -> None:
    path = make_ct(tmp_path)
    assert read_dicom_metadata(path.read_bytes()).to_dict() == read_dicom_metadata(path).to_dict()


def test_not_dicom(tmp_path: Path) -> None:
    png = tmp_path / "photo.dcm"
    Image.new("L", (16, 16)).save(png, format="PNG")
    with pytest.raises(ImageReadError, match=r"photo\.dcm: not a DICOM file \(content is png\)"):
        read_dicom_metadata(png)
    with pytest.raises(ImageReadError, match=r"missing\.dcm: file not found"):
        read_dicom_metadata(tmp_path / "missing.dcm")


def test_real_samples(data_root: Path) -> None:
    for path in sorted((data_root / "dicom_samples").glob("*.dcm")):
        meta = read_dicom_metadata(path)
        assert meta.clinical["Modality"] in {"CT", "MR", "CR", "US", "NM", "OT"}, path.name
        assert isinstance(meta.clinical["Rows"], int)
        public = meta.to_dict()
        assert "PatientName" not in public and "PatientID" not in public
        json.dumps(meta.to_dict(include_identifiers=True))
    brain = read_dicom_metadata(data_root / "dicom_samples" / "ctbrain1.dcm")
    assert brain.identifying["PatientName"]  # the deid test file carries a (fake) name
    assert brain.clinical["TransferSyntax"] == "JPEG Baseline (Process 1)"
    assert read_dicom_metadata(data_root / "dicom_samples" / "emri_small.dcm").n_frames == 10


# --- one sniff, one parse: load_image_with_meta and the session's load_input ---------------------------


def test_load_image_with_meta_equals_the_separate_reads(tmp_path: Path, data_root: Path) -> None:
    ct = make_ct(tmp_path)
    for path in [ct, *sorted((data_root / "dicom_samples").glob("*.dcm"))]:
        try:
            reference = load_image(path)
        except MedfewError as exc:  # a sample the readers refuse is refused the same way
            with pytest.raises(type(exc), match=f"^{re.escape(str(exc))}$"):
                load_image_with_meta(path)
            continue
        image, meta = load_image_with_meta(path)
        np.testing.assert_array_equal(image, reference)
        assert isinstance(meta, ImageMeta) and meta.format == "dicom" and meta.shape == image.shape
        assert meta.dicom is not None, path.name
        expected = read_dicom_metadata(path).to_dict(include_identifiers=True)
        assert meta.dicom.to_dict(include_identifiers=True) == expected, path.name
    image, meta = load_image_with_meta(ct.read_bytes(), name="upload.dcm", window="lung")
    np.testing.assert_array_equal(image, load_image(ct, window="lung"))
    assert meta.dicom is not None and meta.dicom.identifying["PatientID"] == PHI["PatientID"]
    assert "MRN-778899" not in repr(meta) and "Doe" not in repr(meta)


def test_load_input_sniffs_and_parses_a_dicom_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_ct(tmp_path, "once.dcm")
    reference = load_image(path)
    calls = {"dcmread": 0, "sniff": 0}
    real_dcmread, real_sniff = pydicom.dcmread, sniff_module._sniff_head

    def counting_dcmread(*args: object, **kwargs: object) -> object:  # a spy: the real parse runs
        calls["dcmread"] += 1
        return real_dcmread(*args, **kwargs)

    def counting_sniff(head: bytes) -> str | None:
        calls["sniff"] += 1
        return real_sniff(head)

    monkeypatch.setattr(pydicom, "dcmread", counting_dcmread)
    monkeypatch.setattr(sniff_module, "_sniff_head", counting_sniff)
    caplog.set_level("DEBUG")
    for given in (path, path.read_bytes()):
        calls.update(dcmread=0, sniff=0)
        loaded = load_input(given, "once.dcm")
        assert calls == {"dcmread": 1, "sniff": 1}, type(given).__name__
        np.testing.assert_array_equal(loaded.pixels, reference)
        assert loaded.dicom is not None and loaded.dicom.modality == "CT"
        assert loaded.dicom.to_dict(include_identifiers=True) == read_dicom_metadata(path).to_dict(
            include_identifiers=True
        )
        assert "MRN-778899" not in repr(loaded) and "Doe" not in repr(loaded)
    for value in PHI.values():
        assert value not in caplog.text
