"""Per-frame intensity attributes of a DICOM image, including enhanced multi-frame functional groups.

Enhanced (multi-frame) IODs move *Rescale Slope/Intercept* into the Pixel Value Transformation
Sequence and *Window Center/Width* into the Frame VOI LUT Sequence of the Shared or Per-frame
Functional Groups; :func:`frame_view` flattens them back into one data set that pydicom's
``apply_modality_lut`` / ``apply_voi`` understand.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

# Top-level attributes that govern intensity, copied into the view.
_INTENSITY_KEYWORDS: tuple[str, ...] = (
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)

# Functional group macro -> the attributes it carries.
_GROUP_MACROS: dict[str, tuple[str, ...]] = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness"),
}


def group_value(ds: Dataset, keyword: str, index: int = 0) -> object | None:
    """An attribute from the Per-frame, then Shared Functional Groups of frame ``index``, else ``None``.

    Args:
        ds: The data set.
        keyword: An attribute carried by one of the functional group macros, e.g. ``"WindowCenter"``.
        index: The 0-based frame.
    """
    macros = [m for m, keys in _GROUP_MACROS.items() if keyword in keys]
    for groups_keyword, item_index in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(groups_keyword)
        if not groups or item_index >= len(groups):
            continue
        for macro in macros:
            seq = groups[item_index].get(macro)
            if seq and keyword in seq[0] and seq[0][keyword].value not in (None, ""):
                return seq[0][keyword].value
    return None


def frame_view(ds: Dataset, index: int = 0) -> Dataset:
    """A small data set with the intensity attributes that apply to frame ``index``.

    Per-frame functional groups override shared ones, which override the top-level attributes.

    Args:
        ds: The full data set.
        index: The 0-based frame.

    Returns:
        A new :class:`~pydicom.dataset.Dataset` (with ``file_meta`` shared) holding only intensity attributes.
    """
    view = Dataset()
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta
    for keyword in _INTENSITY_KEYWORDS:
        if keyword in ds and ds[keyword].value not in (None, ""):
            view[keyword] = ds[keyword]
    for keys in _GROUP_MACROS.values():
        for keyword in keys:
            value = group_value(ds, keyword, index)
            if value is not None and keyword in _INTENSITY_KEYWORDS:
                setattr(view, keyword, value)
    return view
