"""Write tests/fixtures/terratorch_parity/: what TerraTorch computes after its encoder, for the parity test.

Run with a Python that has TerraTorch (never a dependency of terramind-ft; a scratch venv):

    /tmp/tt/bin/python scripts/make_terratorch_parity_fixtures.py

For each case (a model_args of TerraTorch's EncoderDecoderFactory on terramind_v1_tiny, random weights, eval
mode) it saves the encoder's features for a fixed input (64 x 48 px, which TerraTorch pads to 64 x 64), the weights of everything after the encoder (necks,
decoder, head), the model's output, and the name and shape of every parameter and buffer of the whole model.
tests/models/test_terratorch_parity.py builds the same model_args with terramind-ft, loads those weights, runs
its necks, decoder and head on the same features, and compares the output; and compares the names and shapes.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "terratorch_parity"
BASE = {"backbone": "terramind_v1_tiny", "backbone_pretrained": False, "backbone_modalities": ["S2L1C", "S1GRD"]}
PYRAMID = [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
           {"name": "ReshapeTokensToImage", "remove_cls_token": False}, {"name": "LearnedInterpolateToPyramidal"}]
LAST = [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage", "remove_cls_token": False}]
# Task arguments beyond model_args, per case: auxiliary heads (TerraTorch's AuxiliaryHead fields).
TASK_ARGS = {"segmentation_fcn_aux_fcn": {
    "aux_heads": [{"name": "aux1", "decoder": "FCNDecoder",
                   "decoder_args": {"decoder_channels": 8, "decoder_num_convs": 2, "head_dropout": 0.1}}],
    "aux_loss": {"aux1": 0.5}}}
CASES = {  # name: (task class, loss, model_args)
    "segmentation_unet": ("SemanticSegmentationTask", "ce", {
        **BASE, "necks": PYRAMID, "decoder": "UNetDecoder", "decoder_channels": [32, 16, 8, 4],
        "head_dropout": 0.1, "num_classes": 2}),
    "segmentation_upernet": ("SemanticSegmentationTask", "ce", {
        **BASE, "necks": PYRAMID, "decoder": "UperNetDecoder", "decoder_channels": 16, "num_classes": 2}),
    "segmentation_fcn": ("SemanticSegmentationTask", "ce", {
        **BASE, "necks": LAST, "decoder": "FCNDecoder", "decoder_channels": 16, "num_classes": 2}),
    "segmentation_interpolate_unet": ("SemanticSegmentationTask", "ce", {
        **BASE, "necks": [*PYRAMID[:2], {"name": "InterpolateToPyramidal"}],
        "decoder": "UNetDecoder", "decoder_channels": [16, 8, 8, 4], "head_channel_list": [8, 4], "num_classes": 3}),
    "segmentation_fcn_aux_fcn": ("SemanticSegmentationTask", "ce", {
        **BASE, "necks": LAST, "decoder": "FCNDecoder", "decoder_channels": 8, "num_classes": 2}),
    "classification_mlp": ("ClassificationTask", "ce", {
        **BASE, "necks": LAST, "decoder": "IdentityDecoder", "head_dim_list": [16], "num_classes": 4}),
    "regression_unet_upscale": ("PixelwiseRegressionTask", "mse", {
        **BASE, "necks": PYRAMID, "decoder": "UNetDecoder", "decoder_channels": [16, 8, 8, 4],
        "head_learned_upscale_layers": 1, "head_channel_list": [4]}),
    # TerraTorch 1.2.11 builds LinearDecoder by name only with decoder_num_classes, and then puts the task's head
    # after it (its factory reads includes_head from the registry, not the class)
    "segmentation_linear": ("SemanticSegmentationTask", "ce", {
        **BASE, "necks": LAST, "decoder": "LinearDecoder", "decoder_upsampling_size": 16,
        "decoder_num_classes": 6, "num_classes": 3}),
    "segmentation_mlp": ("SemanticSegmentationTask", "ce", {
        **BASE, "necks": [{"name": "SelectIndices", "indices": [5, 11]}, LAST[1]], "decoder": "MLPDecoder",
        "decoder_activation": "GELU", "num_classes": 2}),
    "regression_linear": ("PixelwiseRegressionTask", "mse", {
        **BASE, "necks": LAST, "decoder": "LinearDecoder", "decoder_upsampling_size": 4,
        "decoder_num_classes": 1}),
    "classification_mlp_decoder": ("ClassificationTask", "ce", {
        **BASE, "necks": LAST, "decoder": "MLPDecoder", "head_dim_list": [8], "num_classes": 3}),
}


def main() -> int:
    warnings.filterwarnings("ignore")
    from importlib.metadata import version

    import terratorch.tasks

    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    inputs = {"S2L1C": torch.randn(2, 13, 64, 48, generator=generator),
              "S1GRD": torch.randn(2, 2, 64, 48, generator=generator)}
    for name, (task_name, loss, model_args) in CASES.items():
        torch.manual_seed(0)
        task_args = dict(TASK_ARGS.get(name, {}))
        if "aux_heads" in task_args:
            from terratorch.models.model import AuxiliaryHead

            task_args["aux_heads"] = [AuxiliaryHead(a["name"], a["decoder"], a["decoder_args"])
                                      for a in task_args["aux_heads"]]
        task = getattr(terratorch.tasks, task_name)(model_args=dict(model_args), model_factory="EncoderDecoderFactory",
                                                    loss=loss, **task_args)
        model = task.model.eval()
        for module in model.modules():  # non-trivial batch-norm statistics, so that eval mode is really tested
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        with torch.no_grad():
            # Weights after the encoder are stored as bfloat16 (half the file): made exactly representable first,
            # so both tools compute with the same float32 values.
            for key, value in model.state_dict().items():
                if not key.startswith("encoder.") and value.is_floating_point():
                    value.copy_(value.bfloat16().float())
            seen: list = []  # the encoder's output inside the model's own forward (after its padding)
            hook = model.encoder.register_forward_hook(lambda module, args, out: seen.append([f.clone() for f in out]))
            output = model(dict(inputs)).output
            hook.remove()
            features = seen[0]
        state = {k: v.bfloat16() if v.is_floating_point() else v.clone()
                 for k, v in model.state_dict().items() if not k.startswith("encoder.")}
        torch.save({"terratorch": version("terratorch"), "task": task_name, "model_args": model_args,
                    "task_args": TASK_ARGS.get(name, {}),
                    "image_size": list(inputs["S2L1C"].shape[-2:]), "features": features, "weights": state,
                    "output": output.clone(),
                    "keys": {f"model.{k}": list(v.shape) for k, v in model.state_dict().items()}},
                   OUT / f"{name}.pt")
        print(f"{name}: output {tuple(output.shape)}, {sum(v.numel() for v in state.values())} weights after the "
              "encoder")
    return 0


if __name__ == "__main__":
    sys.exit(main())
