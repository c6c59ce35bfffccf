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
from terramind_ft.models import necks, heads  # noqa: F401
from terramind_ft.models.terramind import encoder  # noqa: F401
from terramind_ft.models.terramind import decoder  # noqa: F401
from terramind_ft.models.terramind import tim  # noqa: F401
from terramind_ft.models.terramind import generation  # noqa: F401
from terramind_ft.models.decoders import fcn, identity, linear, mlp, unet, upernet  # noqa: F401
from terramind_ft.models.tokenizers import coords, tokenizer  # noqa: F401
