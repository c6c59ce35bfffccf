"""The same config builds the same network as TerraTorch's, with the same parameter names.

Fixtures (``tests/fixtures/terratorch_parity/``, written by ``scripts/make_terratorch_parity_fixtures.py`` with
TerraTorch 1.2.11): for each case, TerraTorch's encoder features for a fixed input, the weights of its necks,
decoder and head, its output, and the name and shape of every parameter and buffer of its model.

terramind-ft builds the same ``model_args``, which must hold exactly those names and shapes (so a TerraTorch
checkpoint loads strictly, and ours load in TerraTorch), loads the weights, and runs its necks, decoder and head
(the resize to the padded input and the crop back) on the same features: the output must be TerraTorch's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import terramind_ft.tasks as tasks

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "terratorch_parity").glob("*.pt"))


def test_the_fixtures_are_there():
    assert len(FIXTURES) >= 6, "tests/fixtures/terratorch_parity/ is incomplete"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_same_parameter_names_and_output_as_terratorch(path):
    case = torch.load(path, weights_only=True)
    task_class = getattr(tasks, case["task"])
    loss = "mse" if "Regression" in case["task"] else "ce"
    task = task_class(model_args=dict(case["model_args"]), loss=loss, **case.get("task_args", {}))
    model = task.model.eval()

    ours = {f"model.{k}": list(v.shape) for k, v in model.state_dict().items()}
    assert ours == case["keys"]
    # parameters in TerraTorch's order: an optimiser's state is a list over them, so a TerraTorch run resumes
    parameters = [f"model.{k}" for k, _ in model.named_parameters()]
    assert parameters == [k for k in case["keys"] if k in set(parameters)]

    weights = {k: v.float() if v.is_floating_point() else v for k, v in case["weights"].items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("encoder.") for k in missing)

    h, w = case["image_size"]  # 64 x 48: both tools pad it to 64 x 64 (an even token grid) and crop back
    with torch.no_grad():
        out = model.decode(list(case["features"]), (h, w)).output
    assert out.shape == case["output"].shape
    torch.testing.assert_close(out, case["output"], rtol=1e-4, atol=1e-5)


def test_a_terratorch_checkpoint_loads_strictly_into_the_same_config(tmp_path):
    """The names and shapes of a TerraTorch model are a terramind-ft model's: its whole state dict (encoder
    included, as a checkpoint holds it) loads with strict=True."""
    case = torch.load(FIXTURES[0], weights_only=True)
    task = getattr(tasks, case["task"])(model_args=dict(case["model_args"]))
    encoder = {k: v for k, v in task.state_dict().items() if k.startswith("model.encoder.")}
    checkpoint_state = {**encoder, **{f"model.{k}": v.float() if v.is_floating_point() else v
                                      for k, v in case["weights"].items()}}
    fresh = getattr(tasks, case["task"])(model_args=dict(case["model_args"]))
    fresh.load_state_dict(checkpoint_state, strict=True)
