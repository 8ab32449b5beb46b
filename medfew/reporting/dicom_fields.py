"""Which DICOM header attributes a report may carry without the user opting in.

DICOM PS3.15's Basic Application Level Confidentiality Profile treats free text and device details
as able to identify a patient: a site can type anything into ``Manufacturer``, ``ImageType`` or
``ViewPosition``, including a name. So by default a report carries only an allow-list of coded,
non-free-text attributes: the modality (from its defined terms), the image geometry, the pixel
spacing, the encoding, and the body part when its value is one of PS3.16's defined terms. Everything
else the reader keeps (:attr:`medfew.data.readers.DicomMetadata.clinical`) reaches a report only with
``include_identifiers=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REPORT_ATTRIBUTES: tuple[str, ...] = (
    "SOPClassUID",
    "SOPClass",
    "TransferSyntaxUID",
    "TransferSyntax",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
)
"""Coded or numeric attributes a default report may carry (besides ``Modality`` and ``BodyPartExamined``)."""

MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS "
    "MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTPLAN "
    "RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TG US VA XA XC".split()
)
"""Defined terms of ``Modality`` (PS3.3 C.7.3.1.1.1)."""

BODY_PARTS = frozenset(
    "ABDOMEN ABDOMENPELVIS ADRENAL ANKLE AORTA ARM AXILLA BACK BLADDER BRAIN BREAST BRONCHUS BUTTOCK CALCANEUS "
    "CALF CAROTID CEREBELLUM CERVIX CHEST CHESTABDOMEN CHESTABDPELVIS CLAVICLE COCCYX COLON CORNEA CSPINE "
    "CTSPINE DUODENUM EAR ELBOW ESOPHAGUS EXTREMITY EYE EYELID FACE FEMUR FINGER FOOT GALLBLADDER HAND HEAD "
    "HEADNECK HEART HIP HUMERUS ILEUM ILIUM IAC JAW JEJUNUM KIDNEY KNEE LARYNX LEG LIVER LSPINE LSSPINE LUNG "
    "MAXILLA MEDIASTINUM MOUTH NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NOSE ORBIT OVARY PANCREAS "
    "PAROTID PATELLA PELVIS PENIS PHARYNX PROSTATE RECTUM RIB SACRUM SCAPULA SCLERA SCROTUM SHOULDER SKULL "
    "SPINE SPLEEN SSPINE STERNUM STOMACH SUBMANDIBULAR TESTIS THIGH THUMB THYMUS THYROID TIBIA TOE TONGUE "
    "TRACHEA TSPINE ULNA URETER URETHRA UTERUS VAGINA VULVA WAIST WHOLEBODY WRIST ZYGOMA".split()
)
"""Defined terms of ``BodyPartExamined`` (PS3.16 Annex L, the common ones)."""


def report_attributes(clinical: Mapping[str, Any], *, include_identifiers: bool = False) -> dict[str, Any]:
    """The header attributes of one DICOM query that its report may show.

    Args:
        clinical: The reader's non-identifying header fields (keyword -> value).
        include_identifiers: The user opted in: every field is copied.

    Returns:
        Keyword -> value: the allow-list only, unless ``include_identifiers``.
    """
    if include_identifiers:
        return {k: list(v) if isinstance(v, list) else v for k, v in clinical.items()}
    out: dict[str, Any] = {}
    for keyword, terms in (("Modality", MODALITIES), ("BodyPartExamined", BODY_PARTS)):
        value = clinical.get(keyword)
        if isinstance(value, str) and value.strip().upper() in terms:
            out[keyword] = value.strip().upper()
    out.update({k: list(v) if isinstance(v, list) else v for k, v in clinical.items() if k in REPORT_ATTRIBUTES})
    return out
