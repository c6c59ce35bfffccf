"""Model code. Importing this package registers every backbone, full model, neck, decoder and head.

Each import below registers the entries defined in that module (see :mod:`terramind_ft.registry`).
"""

from terramind_ft.registry import (  # noqa: F401
    BACKBONE_REGISTRY,
    DECODER_REGISTRY,
    FULL_MODEL_REGISTRY,
    HEAD_REGISTRY,
    NECK_REGISTRY,
)

# Registering modules (add one line per module that defines registry entries):
