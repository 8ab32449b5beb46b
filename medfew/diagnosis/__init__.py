"""medfew.diagnosis: a clinician's session - support set -> adapted model -> calibrated predictions,
prediction sets, uncertainty, saliency."""

from medfew.diagnosis.inputs import ImageInput, LoadedImage, load_input, pixel_sha256
from medfew.diagnosis.prediction import (
    WEAK_SUPPORT_ACCURACY,
    LeaveOneOutResult,
    Prediction,
    describe_set,
    join_classes,
)
from medfew.diagnosis.saliency import SALIENCY_CAVEAT, SaliencyMapper, last_conv_layer
from medfew.diagnosis.session import DiagnosisSession
from medfew.diagnosis.support import SupportScan
from medfew.diagnosis.uncertainty import (
    OOD_FACTOR,
    UNCERTAIN_THRESHOLD,
    DistanceReference,
    entropy_flags,
)
from medfew.diagnosis.uploads import LabelledUpload, UploadProblem, expand_class_zip
from medfew.evaluation.conformal import DEFAULT_ALPHA
from medfew.methods.base import support_shortfall

__all__ = [
    "DEFAULT_ALPHA",
    "OOD_FACTOR",
    "SALIENCY_CAVEAT",
    "UNCERTAIN_THRESHOLD",
    "WEAK_SUPPORT_ACCURACY",
    "DiagnosisSession",
    "DistanceReference",
    "ImageInput",
    "LabelledUpload",
    "LeaveOneOutResult",
    "LoadedImage",
    "Prediction",
    "SaliencyMapper",
    "SupportScan",
    "UploadProblem",
    "describe_set",
    "entropy_flags",
    "expand_class_zip",
    "join_classes",
    "last_conv_layer",
    "load_input",
    "pixel_sha256",
    "support_shortfall",
]
