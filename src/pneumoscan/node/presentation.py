"""The DICOM node's optional third result: a Grayscale Softcopy Presentation State (highdicom) that draws the
screening on the original film, at the film's own resolution, as layers a viewer can switch on and off: the
lung outline (``LUNGS``), the contours of the explained class's heatmap at half and four fifths of its peak
(``HEATMAP``) and the outcome with "research use" (``OUTCOME``).

The screener resizes the whole film to its square input (no crop), so a point of the input's grid maps to the
film by scaling alone. Contours are traced by contourpy (matplotlib's contour engine) in the input's grid and
scaled into the film's pixel coordinates, in which the top-left corner of the top-left pixel is (0, 0) and the
bottom-right corner of the bottom-right pixel is (Columns, Rows) (DICOM PS3.3 C.10.5, PIXEL units).
"""

from __future__ import annotations

import functools

import numpy as np
from pydicom.dataset import Dataset

from pneumoscan.explain.render import CMAP, OUTLINE
from pneumoscan.models.description import ModelDescription
from pneumoscan.node.results import (
    PR_SERIES,
    RESEARCH_USE,
    Film,
    headline,
    model_name,
    result_uid,
    stamped,
    with_body_part,
)

HEAT_LEVELS = (0.5, 0.8)  # shares of the heatmap's peak (the Grad-CAM map is scaled to [0, 1])
MIN_POINTS = 3  # a contour of fewer points is a speck, not a region


def contours(field: np.ndarray, levels: tuple[float, ...], rows: int, columns: int) -> list[np.ndarray]:
    """The lines where ``field`` (the screener's square grid) crosses each of ``levels``, as (column, row) points
    in the pixel coordinates of a ``rows`` x ``columns`` film (one contour generator for every level)."""
    import contourpy

    scale = np.array([columns / field.shape[1], rows / field.shape[0]])
    generator = contourpy.contour_generator(z=np.asarray(field, dtype=np.float64), line_type="Separate")
    return [(line + 0.5) * scale for level in levels for line in generator.lines(level) if len(line) >= MIN_POINTS]


def presentation_state(film: Film, description: ModelDescription, version: str) -> Dataset | None:
    """A GSPS of a scored ``film`` with its lung outline, its heatmap's contours and its outcome as three layers
    on the source image; None for a colour source (a digitised film stored as RGB), which a grayscale
    presentation state cannot present."""
    import highdicom as hd

    if not str(film.source.get("PhotometricInterpretation", "")).startswith("MONOCHROME"):
        return None

    screening, source, model = film.screening, film.source, model_name(description)
    rows, columns = int(source.Rows), int(source.Columns)
    layers, annotations = [], []

    def annotate(name: str, meaning: str, rgb: tuple[int, int, int], **objects) -> None:
        layer = hd.pr.GraphicLayer(name, len(layers) + 1, meaning[:64], hd.color.CIELabColor.from_rgb(*rgb))
        layers.append(layer)
        annotations.append(hd.pr.GraphicAnnotation([source], layer, **objects))

    def polylines(lines: list[np.ndarray]) -> list:
        return [hd.pr.GraphicObject(hd.pr.GraphicTypeValues.POLYLINE, line, hd.pr.AnnotationUnitsValues.PIXEL)
                for line in lines]

    if screening.lungs is not None:
        lines = contours(screening.lungs.astype(np.float64), (0.5,), rows, columns)
        if lines:
            annotate("LUNGS", "lung outline drawn by the model's lung segmenter", OUTLINE,
                     graphic_objects=polylines(lines))
    lines = contours(screening.heatmap, HEAT_LEVELS, rows, columns)
    if lines:
        annotate("HEATMAP", f"Grad-CAM of {screening.explained or screening.label} at "
                            f"{' and '.join(f'{level:.0%}' for level in HEAT_LEVELS)} of its peak",
                 heat_colour(max(HEAT_LEVELS)), graphic_objects=polylines(lines))
    title = f"pneumoscan: {headline(screening)}  {RESEARCH_USE}"
    annotate("OUTCOME", "the screening's outcome", (255, 255, 0), text_objects=[hd.pr.TextObject(
        title, hd.pr.AnnotationUnitsValues.PIXEL, bounding_box=(1.0, 1.0, columns - 1.0, max(2.0, rows * 0.06)),
        text_justification=hd.pr.TextJustificationValues.LEFT)])
    uid = source.SOPInstanceUID
    state = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source], series_instance_uid=result_uid(uid, "pr series", model), series_number=PR_SERIES,
        sop_instance_uid=result_uid(uid, "pr", model), instance_number=1, manufacturer="pneumoscan",
        manufacturer_model_name=model[:64], software_versions=version, device_serial_number=description.arch[:64],
        content_label="PNEUMOSCAN", content_description=f"lungs and heatmap ({RESEARCH_USE})"[:64],
        graphic_annotations=annotations, graphic_layers=layers)
    state.SeriesDescription = f"pneumoscan drawings ({RESEARCH_USE})"
    return stamped(with_body_part(state, source), film.now)


@functools.cache
def heat_colour(level: float) -> tuple[int, int, int]:
    """The overlay's colour for ``level`` of the heatmap, as 8-bit RGB."""
    from matplotlib import colormaps

    return tuple(int(round(255 * c)) for c in colormaps[CMAP](level)[:3])
