"""pneumoscan: explainable pneumonia screening on chest X-rays.

The pipeline reads left to right: ``data`` -> ``models`` -> ``train`` -> ``evaluate`` ->
``explain`` -> ``export`` -> ``serve``; ``cli`` only parses arguments and calls these stages.
"""

from pneumoscan.data.labels import CLASSES

__version__ = "0.1.0"
__all__ = ["CLASSES", "__version__"]
