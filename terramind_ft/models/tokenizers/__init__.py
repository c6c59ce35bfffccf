"""TerraMind v1 tokenizers: FSQ, the ViT-B/16 encoder, the DiVAE (diffusion UNet + DDIM) and LULC VQVAE decoders.

Build them through the registries (``FULL_MODEL_REGISTRY.build("terramind_v1_tokenizer_s2l2a", pretrained=True)``)
or :func:`build_tokenizer`; see :mod:`terramind_ft.models.tokenizers.tokenizer` for the API.
"""

from terramind_ft.models.tokenizers.fsq import FSQ, FSQOutput
from terramind_ft.models.tokenizers.tokenizer import (DEFAULT_TIMESTEPS, TOKENIZER_NAMES, DiVAE, TokenizerBackbone,
                                                      TokenizerEncoder, VQVAE, build_tokenizer,
                                                      build_tokenizer_backbone, tokenizer_name)

__all__ = ["DEFAULT_TIMESTEPS", "FSQ", "FSQOutput", "TOKENIZER_NAMES", "DiVAE", "TokenizerBackbone",
           "TokenizerEncoder", "VQVAE", "build_tokenizer", "build_tokenizer_backbone", "tokenizer_name"]
