"""pneumoscan: explainable screening of medical images, from a labelled folder to a served model.

The pipeline reads left to right: ``data`` -> ``models`` -> ``train`` -> ``evaluate`` ->
``explain`` -> ``export`` -> ``serve``; ``cli`` only parses arguments and calls these stages.
Every finished model screens through one object, ``pneumoscan.load(path).screen(paths)``, and says what
it is in ``pneumoscan.load(path).description`` (``model_description.ModelDescription``).
"""

from pneumoscan.data.labels import CLASSES

__version__ = "0.1.0"
__all__ = ["CLASSES", "__version__", "load"]


def load(path, **options):
    """The ``screen.Screener`` of a run folder, ``model.pt``, ``.onnx`` or OpenVINO ``.xml``
    (``options``: ``runtime``, ``precision``, ``max_pixels``; see ``screen.load``)."""
    from pneumoscan.inference.screen import load as load_screener

    return load_screener(path, **options)
