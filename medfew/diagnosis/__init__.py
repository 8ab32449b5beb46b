"""medfew.diagnosis: a clinician's session - support set -> adapted model -> predictions, uncertainty, saliency."""

from medfew.diagnosis.inputs import ImageInput, LoadedImage, load_input, pixel_sha256
from medfew.diagnosis.prediction import LeaveOneOutResult, Prediction
from medfew.diagnosis.saliency import SALIENCY_CAVEAT, SaliencyMapper, last_conv_layer
from medfew.diagnosis.session import DiagnosisSession, SupportScan
from medfew.diagnosis.uncertainty import (
    OOD_FACTOR,
    UNCERTAIN_THRESHOLD,
    DistanceReference,
    entropy_flags,
)

__all__ = [
    "OOD_FACTOR",
    "SALIENCY_CAVEAT",
    "UNCERTAIN_THRESHOLD",
    "DiagnosisSession",
    "DistanceReference",
    "ImageInput",
    "LeaveOneOutResult",
    "LoadedImage",
    "Prediction",
    "SaliencyMapper",
    "SupportScan",
    "entropy_flags",
    "last_conv_layer",
    "load_input",
    "pixel_sha256",
]
