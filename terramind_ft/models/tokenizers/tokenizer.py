"""The six TerraMind v1 tokenizers (DiVAE x5, LULC VQVAE) and their encoder-only backbones.

Registry entries (names in :data:`TOKENIZER_NAMES`, one per modality with a tokenizer in the catalogue):

* ``FULL_MODEL_REGISTRY``: ``terramind_v1_tokenizer_{s2l2a,s1grd,s1rtc,dem,ndvi}`` -> :class:`DiVAE` (ViT-B/16
  encoder + FSQ 8-8-8-6-5 + patched diffusion UNet decoder sampled with DDIM) and ``terramind_v1_tokenizer_lulc``
  -> :class:`VQVAE` (ViT-B/16 encoder + FSQ 7-5-5-5-5 + ViT-B/16 decoder giving 10-class logits).
* ``BACKBONE_REGISTRY``: the same names -> :class:`TokenizerBackbone` (encoder + quantiser only; the
  checkpoint's ``decoder.*`` / ``post_quant_proj.*`` tensors are dropped when loading).

Builders take ``pretrained=True`` (download ``ibm-esa-geospatial/TerraMind-1.0-Tokenizer-<X>`` /
``TerraMind_Tokenizer_<X>.pt`` with huggingface_hub) or ``ckpt_path=`` (a local file). Official files hold
exactly the model's state-dict keys (601 DiVAE / 310 VQVAE) and are loaded strictly: a missing, extra or
mis-shaped tensor raises :class:`~terramind_ft.errors.CheckpointError`.

API shared by both tokenizer kinds (inputs standardised with the catalogue's v1 mean/std; LULC takes class maps):

* ``encode(x [B, C, H, W]) -> ids int64 [B, H/16, W/16]`` (FSQ indices are int32 in the reference; widened to
  int64 here so they index embeddings directly). H, W must be multiples of 16.
* ``encode_latent(x) -> [B, 5, h, w]`` (pre-quantisation) and ``encode_codes(x) -> [B, 5, h, w]`` (FSQ codes in
  [0, 1], straight-through gradients); ``tokens_to_codes(ids)`` maps ids back to codes.
* ``decode_tokens(ids [B, h, w], timesteps=10, image_size=None, generator=None) -> [B, C_out, H, W]``:
  DiVAE samples with ``timesteps`` DDIM steps from noise drawn with ``generator`` (CPU generator by default)
  at ``image_size`` (int or (H, W); default 16 x token grid; multiples of 32) and returns values in [-1, 1]
  (standardised units). VQVAE is deterministic (``timesteps``/``generator`` are ignored) and returns 10-class
  logits at 16 x token grid.
* ``forward(x, timesteps=10, generator=None)``: reconstruction = ``decode_tokens(encode(x))`` at x's size.
  (The reference's default is 50 steps; its notebooks use 10.)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terramind_ft.errors import CheckpointError, ConfigError, DataError, ModalityError
from terramind_ft.hub import CheckpointWarning, load_checkpoint, read_state_dict, resolve_checkpoint
from terramind_ft.modalities import MODALITIES, PATCH_SIZE, TOKEN_MODALITIES, Modality, get_modality
from terramind_ft.models.terramind.encoder import BackboneOutput
from terramind_ft.models.tokenizers.diffusion import DDIMSchedule, ddim_sample
from terramind_ft.models.tokenizers.fsq import FSQ
from terramind_ft.models.tokenizers.unet import PatchedDiffusionUNet
from terramind_ft.models.tokenizers.vit import DIM, TokenizerViTDecoder, TokenizerViTEncoder
from terramind_ft.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY

DEFAULT_TIMESTEPS = 10  # DDIM steps of forward/decode_tokens (reference default 50; its notebooks use 10)
ReturnType = Literal["embedding", "latent", "quantized"]


def tokenizer_name(modality: str) -> str:
    """Registry name of a modality's tokenizer, e.g. ``S2L2A -> terramind_v1_tokenizer_s2l2a``."""
    return f"terramind_v1_tokenizer_{_tokenizer_modality(modality).tokenizer.lower()}"  # type: ignore[union-attr]


def _tokenizer_modality(modality: str) -> Modality:
    m = get_modality(modality, key="modality")
    if not m.tokenizer or not m.fsq_levels:
        raise ModalityError(f"modality {m.name!r} has no TerraMind v1 tokenizer; tokenizers exist for "
                            f"{', '.join(TOKEN_MODALITIES)}", key="modality")
    return m


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ConfigError(f"image_size must be an int or (H, W), got {size!r}", key="image_size")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------------------------------- models


class TokenizerEncoder(nn.Module):
    """ViT-B/16 encoder -> ``quant_proj`` (1x1 conv to 5 channels) -> FSQ: the part every tokenizer shares."""

    def __init__(self, modality: str):
        super().__init__()
        m = _tokenizer_modality(modality)
        self.modality = m.name
        self.in_channels = m.num_bands  # LULC: one channel per class (one-hot)
        self.num_classes = m.num_classes
        self.patch_size = PATCH_SIZE
        self.latent_dim = len(m.fsq_levels)  # type: ignore[arg-type]
        self.encoder = TokenizerViTEncoder(self.in_channels, name=m.name)
        self.quant_proj = nn.Conv2d(DIM, self.latent_dim, 1)
        self.quantize = FSQ(m.fsq_levels, name=m.name)  # type: ignore[arg-type]
        self.vocab_size = self.quantize.vocab_size

    def prepare_input(self, x: Tensor) -> Tensor:
        """Validate the input; one-hot encode categorical class maps ``[B, H, W]`` / ``[B, 1, H, W]``."""
        if self.num_classes is not None and (x.ndim == 3 or (x.ndim == 4 and x.shape[1] == 1)):
            classes = x.squeeze(1) if x.ndim == 4 else x
            if classes.is_floating_point() and classes.device.type != "meta" and \
                    not torch.equal(classes, classes.round()):
                raise DataError(f"{self.modality} class maps must hold integer class ids, got fractional values")
            classes = classes.long()
            if classes.device.type != "meta" and classes.numel() and \
                    (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
                raise DataError(f"{self.modality} class ids must lie in [0, {self.num_classes}), got values in "
                                f"[{int(classes.min())}, {int(classes.max())}]")
            return F.one_hot(classes, self.num_classes).permute(0, 3, 1, 2).to(self.encoder.proj.weight.dtype)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            hint = (f"a class map [B, H, W] / [B, 1, H, W] or a one-hot map [B, {self.in_channels}, H, W]"
                    if self.num_classes else f"[B, {self.in_channels}, H, W] standardised "
                                             f"({', '.join(get_modality(self.modality).bands)})")
            raise DataError(f"tokenizer of modality {self.modality} expects {hint}, got shape {tuple(x.shape)}")
        return x

    def encode_latent(self, x: Tensor) -> Tensor:
        """Continuous latent ``[B, 5, H/16, W/16]`` before quantisation."""
        return self.quant_proj(self.encoder(self.prepare_input(x)))

    def encode_codes(self, x: Tensor) -> Tensor:
        """Quantised codes ``[B, 5, H/16, W/16]`` in [0, 1] (straight-through gradients)."""
        return self.quantize(self.encode_latent(x)).codes

    def encode_tokens(self, x: Tensor) -> Tensor:
        """Token ids ``int64 [B, H/16, W/16]`` in ``[0, vocab_size)``."""
        return self.quantize(self.encode_latent(x)).indices.long()

    def encode(self, x: Tensor, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """What the reference's ``encode`` returns, so that the notebooks' ``_, _, tokens = tokenizer.encode(x)``
        works for any batch size: (quantised codes ``[B, 5, h, w]``, the code loss (0: FSQ has none), token ids
        ``int64 [B, h, w]``). :meth:`encode_tokens` gives the ids alone."""
        if device is not None:
            x = x.to(device)
        quantized = self.quantize(self.encode_latent(x))
        return quantized.codes, quantized.codes.new_zeros(()), quantized.indices.long()

    def tokens_to_codes(self, tokens: Tensor) -> Tensor:
        """Codes ``[B, 5, h, w]`` of token ids ``[B, h, w]`` (ids outside the vocabulary raise)."""
        return self.quantize.dequantize(tokens).to(self.quant_proj.weight.dtype)


class DiVAE(TokenizerEncoder):
    """Diffusion tokenizer (S2L2A, S1GRD, S1RTC, DEM, NDVI): encoder + FSQ + patched UNet sampled with DDIM."""

    def __init__(self, modality: str):
        super().__init__(modality)
        if self.num_classes is not None:
            raise ModalityError(f"{self.modality} uses the VQVAE tokenizer, not a DiVAE", key="modality")
        self.out_channels = self.in_channels
        self.decoder = PatchedDiffusionUNet(self.in_channels, cond_channels=self.latent_dim)
        self.schedule = DDIMSchedule()

    def decode_codes(self, codes: Tensor, timesteps: int = DEFAULT_TIMESTEPS,
                     image_size: int | tuple[int, int] | None = None, generator: torch.Generator | None = None,
                     progress: bool = False) -> Tensor:
        """Sample an image ``[B, C, H, W]`` in [-1, 1] conditioned on a code map ``[B, 5, h, w]``."""
        b, _, h, w = codes.shape
        height, width = _pair(image_size) if image_size is not None else (h * self.patch_size, w * self.patch_size)
        multiple = self.decoder.size_multiple
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise ConfigError(f"{self.modality} diffusion decoding needs an image size that is a positive multiple "
                              f"of {multiple}, got {height}x{width}", key="image_size")
        dtype = self.quant_proj.weight.dtype
        cond = codes.to(dtype)

        def denoise(x_t: Tensor, t: int) -> Tensor:
            return self.decoder(x_t.to(dtype), t, cond)

        return ddim_sample(denoise, (b, self.out_channels, height, width), timesteps, self.schedule,
                           codes.device, generator=generator, progress=progress)

    def decode_tokens(self, tokens: Tensor, timesteps: int = DEFAULT_TIMESTEPS,
                      image_size: int | tuple[int, int] | None = None, generator: torch.Generator | None = None,
                      progress: bool = False, verbose: bool = False) -> Tensor:
        """Token ids ``[B, h, w]`` -> sampled image ``[B, C, H, W]`` in [-1, 1] (standardised units).
        ``verbose`` (the reference's name) shows the diffusion steps' progress, as ``progress`` does."""
        return self.decode_codes(self.tokens_to_codes(tokens), timesteps=timesteps, image_size=image_size,
                                 generator=generator, progress=progress or verbose)

    def forward(self, x: Tensor, timesteps: int = DEFAULT_TIMESTEPS, generator: torch.Generator | None = None,
                progress: bool = False, verbose: bool = False) -> Tensor:
        """Reconstruction of a standardised image ``[B, C, H, W]`` (H, W multiples of 32)."""
        codes = self.encode_codes(x)
        return self.decode_codes(codes, timesteps=timesteps, image_size=tuple(x.shape[-2:]), generator=generator,
                                 progress=progress or verbose)


class VQVAE(TokenizerEncoder):
    """LULC tokenizer: encoder + FSQ + ``post_quant_proj`` + ViT-B/16 decoder giving 10-class logits."""

    def __init__(self, modality: str = "LULC"):
        super().__init__(modality)
        if self.num_classes is None:
            raise ModalityError(f"{self.modality} uses a DiVAE tokenizer, not the VQVAE", key="modality")
        self.out_channels = self.num_classes
        self.decoder = TokenizerViTDecoder(self.out_channels)
        self.post_quant_proj = nn.Conv2d(self.latent_dim, DIM, 1)

    def decode_codes(self, codes: Tensor, timesteps: int | None = None,
                     image_size: int | tuple[int, int] | None = None, generator: torch.Generator | None = None,
                     progress: bool = False) -> Tensor:
        """Code map ``[B, 5, h, w]`` -> class logits ``[B, 10, 16h, 16w]`` (deterministic)."""
        h, w = codes.shape[-2:]
        native = (h * self.patch_size, w * self.patch_size)
        if image_size is not None and _pair(image_size) != native:
            raise ConfigError(f"the {self.modality} ViT decoder outputs 16 x the token grid ({native[0]}x{native[1]} "
                              f"for a {h}x{w} grid), got image_size={image_size!r}; resize the logits instead",
                              key="image_size")
        return self.decoder(self.post_quant_proj(codes.to(self.post_quant_proj.weight.dtype)))

    def decode_tokens(self, tokens: Tensor, timesteps: int | None = None,
                      image_size: int | tuple[int, int] | None = None, generator: torch.Generator | None = None,
                      progress: bool = False, verbose: bool = False) -> Tensor:
        """Token ids ``[B, h, w]`` -> class logits ``[B, 10, 16h, 16w]``; ``timesteps``/``generator``/``verbose``
        unused (no sampling)."""
        return self.decode_codes(self.tokens_to_codes(tokens), image_size=image_size)

    def forward(self, x: Tensor, timesteps: int | None = None, generator: torch.Generator | None = None,
                progress: bool = False, verbose: bool = False) -> Tensor:
        """Class logits ``[B, 10, H, W]`` reconstructing a class map ``[B, H, W]`` (or one-hot ``[B, 10, H, W]``)."""
        return self.decode_codes(self.encode_codes(x))


class TokenizerBackbone(TokenizerEncoder):
    """Encoder-only tokenizer as a backbone (the reference's ``VQBackbone``), returning a ``BackboneOutput``.

    ``return_type``: ``"embedding"`` (default) gives the 12 per-block outputs ``[B, N, 768]`` (the last one after
    the post-MLP); ``"latent"`` gives ``[B, N, 5]`` before quantisation, ``"quantized"`` the FSQ codes
    ``[B, N, 5]``. Tokens are row-major over ``.grid``; the reference returns ``[B, D, h, w]`` maps instead, which
    the ``ReshapeTokensToImage`` neck produces. Inputs are padded (bottom/right, zeros) to multiples of 16.
    """

    def __init__(self, modality: str, return_type: ReturnType = "embedding"):
        super().__init__(modality)
        if return_type not in ("embedding", "latent", "quantized"):
            raise ConfigError(f"return_type must be 'embedding', 'latent' or 'quantized', got {return_type!r}",
                              key="return_type")
        self.return_type = return_type
        depth = len(self.encoder.blocks)
        self.out_channels = [DIM] * depth if return_type == "embedding" else [self.latent_dim]

    def forward(self, x: Tensor | dict[str, Tensor]) -> BackboneOutput:
        if isinstance(x, dict):
            x = self._select_input(x)
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.patch_size, -width % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        layers, grid = self.encoder.forward_intermediates(self.prepare_input(x))
        if self.return_type != "embedding":
            b = layers[-1].shape[0]
            feature_map = layers[-1].transpose(1, 2).reshape(b, DIM, *grid)
            latent = self.quant_proj(feature_map)
            if self.return_type == "quantized":
                latent = self.quantize(latent).codes
            layers = [latent.flatten(2).transpose(1, 2)]
        return BackboneOutput(layers, grid=grid, image_size=(int(height), int(width)), modalities=[self.modality])

    def _select_input(self, inputs: dict[str, Tensor]) -> Tensor:
        for name, value in inputs.items():
            if get_modality(name).name == self.modality:
                return value
        raise ModalityError(f"the {self.modality} tokenizer backbone got inputs {list(inputs)} but none of them is "
                            f"{self.modality}", key="modalities")


# ---------------------------------------------------------------------------------------------------- loading


def load_tokenizer_weights(model: nn.Module, *, modality: str, pretrained: bool = False,
                           ckpt_path: str | os.PathLike | None = None, drop_prefixes: tuple[str, ...] = ()) -> bool:
    """Fill ``model`` from the official tokenizer file (``pretrained``) or ``ckpt_path``, strictly.

    Every model tensor must be in the file with its shape, and every file tensor must be used except those
    under ``drop_prefixes`` (the decoder, for the encoder-only backbone). Nothing is copied when the file does
    not fit. Returns False when neither ``pretrained`` nor ``ckpt_path`` asks for weights.
    """
    m = _tokenizer_modality(modality)
    what = f"tokenizer {tokenizer_name(m.name)}"
    path = resolve_checkpoint(pretrained=pretrained, ckpt_path=ckpt_path, repo_id=m.tokenizer_repo,
                              filename=m.tokenizer_filename, what=what)
    if path is None:
        return False
    state = read_state_dict(path)
    model_keys = set(model.state_dict())
    extra = [k for k in state if k not in model_keys and not k.startswith(drop_prefixes)]
    if extra:
        raise CheckpointError(
            f"{path} does not fit {what}: it holds {len(extra)} tensors the model does not have (first: "
            f"{', '.join(extra[:5])}). Official tokenizer files match the model exactly; is this the tokenizer of "
            f"another modality? [config key: {'ckpt_path' if ckpt_path else 'pretrained'}]")
    dropped = [k for k in state if k not in model_keys]
    state = {k: v for k, v in state.items() if k in model_keys}
    report = load_checkpoint(model, state, strict_prefixes=("",), recomputed_buffers=(), auto_strip_prefix=False,
                             what=f"{what} ({path})", warn=False)
    report.source = str(path)
    if dropped:
        report.info.append(f"dropped {len(dropped)} decoder tensors of the file (encoder-only backbone)")
    report.emit()
    return True


def _build_and_load(make: Callable[[], nn.Module], modality: str, pretrained: bool,
                    ckpt_path: str | os.PathLike | None, drop_prefixes: tuple[str, ...] = ()) -> nn.Module:
    """Build with random weights, or, when weights will be loaded, skip the random init of ~290M parameters:
    build on the meta device, allocate, then load strictly (every parameter and persistent buffer is
    overwritten; the FSQ's non-persistent buffers are recomputed)."""
    if not pretrained and not ckpt_path:
        return make()
    with torch.device("meta"):
        model = make()
    model.to_empty(device="cpu")
    model.quantize.reset_buffers("cpu")  # type: ignore[operator]
    load_tokenizer_weights(model, modality=modality, pretrained=pretrained, ckpt_path=ckpt_path,
                           drop_prefixes=drop_prefixes)
    return model


def build_tokenizer(modality: str, *, pretrained: bool = False,
                    ckpt_path: str | os.PathLike | None = None) -> DiVAE | VQVAE:
    """The full tokenizer of ``modality`` (any catalogue alias): VQVAE for LULC, DiVAE otherwise."""
    m = _tokenizer_modality(modality)
    kind = VQVAE if m.is_categorical else DiVAE
    return _build_and_load(lambda: kind(m.name), m.name, pretrained, ckpt_path)  # type: ignore[return-value]


def build_tokenizer_backbone(modality: str, *, return_type: ReturnType = "embedding", pretrained: bool = False,
                             ckpt_path: str | os.PathLike | None = None) -> TokenizerBackbone:
    """The encoder-only tokenizer of ``modality`` as a backbone (decoder tensors of the file are dropped)."""
    m = _tokenizer_modality(modality)
    return _build_and_load(lambda: TokenizerBackbone(m.name, return_type=return_type), m.name,  # type: ignore
                           pretrained, ckpt_path, drop_prefixes=("decoder.", "post_quant_proj."))


# ---------------------------------------------------------------------------------------------------- registry


def _register(modality: str) -> str:
    name = tokenizer_name(modality)
    kind = "VQVAE" if MODALITIES[modality].is_categorical else "DiVAE"

    def full(pretrained: bool = False, ckpt_path: str | None = None) -> DiVAE | VQVAE:
        if not pretrained and not ckpt_path:  # its reconstructions look like images and are noise: say so
            warnings.warn(f"{name} has random weights (pretrained=False, no ckpt_path): its reconstructions are "
                          "noise; pass pretrained=True or a ckpt_path", CheckpointWarning, stacklevel=3)
        return build_tokenizer(modality, pretrained=pretrained, ckpt_path=ckpt_path)

    def backbone(return_type: ReturnType = "embedding", pretrained: bool = False,
                 ckpt_path: str | None = None) -> TokenizerBackbone:
        return build_tokenizer_backbone(modality, return_type=return_type, pretrained=pretrained,
                                        ckpt_path=ckpt_path)

    full.__name__ = full.__qualname__ = backbone.__name__ = backbone.__qualname__ = name
    full.__doc__ = (f"TerraMind v1 {modality} tokenizer ({kind}); ``pretrained=True`` loads "
                    f"{MODALITIES[modality].tokenizer_repo}/{MODALITIES[modality].tokenizer_filename}.")
    backbone.__doc__ = f"Encoder-only TerraMind v1 {modality} tokenizer as a backbone (see TokenizerBackbone)."
    FULL_MODEL_REGISTRY.register(full, name=name)
    BACKBONE_REGISTRY.register(backbone, name=name)
    return name


TOKENIZER_NAMES: dict[str, str] = {modality: _register(modality) for modality in TOKEN_MODALITIES}
