"""Coordinates as a generation output: autoregressive decoding of "[S_1] lat lon [EOS]" and the model's
distribution over locations (probability map in EPSG:4326 at 0.25 degree, top-k).

The known answer comes from a constructed tiny model (coords_vocab.point_coords_decoder_at): after position 0
it says lat=40.00, after 1 lon=-3.50, after 2 [EOS]. Random-weight models check the decoding machinery against plain causal passes.
"""

from __future__ import annotations

import math

import pytest
import torch

from coords_vocab import point_coords_decoder_at, write_coords_vocab
from terramind_ft.models.terramind.generation import TerraMindGeneration
from terramind_ft.models.terramind.geolocation import COLS, ROWS, col_of_lon, great_circle_km, row_of_lat
from terramind_ft.models.tokenizers.coords import EOS_ID, SEQUENCE_START_ID

pytest.importorskip("tokenizers")
pytestmark = pytest.mark.filterwarnings("ignore:.*random weights")


@pytest.fixture
def vocab_file(tmp_path):
    return write_coords_vocab(tmp_path / "config.json")


def _model(vocab_file, outputs=("coords",), **kwargs) -> TerraMindGeneration:
    torch.manual_seed(0)
    return TerraMindGeneration(["S2L2A"], list(outputs), size="tiny", temps=0.0, timesteps=1,
                               tokenizer_kwargs={"coords": {"tokenizer_file": str(vocab_file)}}, **kwargs).eval()


def test_generation_decodes_the_constructed_location(vocab_file):
    model = _model(vocab_file)
    vocab = model._coords_text_tokenizer().tokenizer.get_vocab()
    point_coords_decoder_at(model.sampler.model, [vocab["lat=40.00"], vocab["lon=-3.50"], EOS_ID])
    s2 = torch.randn(2, 12, 32, 32)
    ids = model.generate_tokens({"S2L2A": s2})["coords"]
    assert ids.tolist() == [[vocab["lat=40.00"], vocab["lon=-3.50"], EOS_ID, 0]] * 2  # stopped at [EOS], padded
    torch.testing.assert_close(model({"S2L2A": s2})["coords"], torch.tensor([[-3.5, 40.0]] * 2))


def test_location_distribution_known_answer_and_geotiff(vocab_file, tmp_path):
    import rasterio

    model = _model(vocab_file)
    vocab = model._coords_text_tokenizer().tokenizer.get_vocab()
    point_coords_decoder_at(model.sampler.model, [vocab["lat=40.00"], vocab["lon=-3.50"], EOS_ID])
    dist = model.location_distribution({"S2L2A": torch.randn(2, 12, 32, 32)})
    assert dist.probabilities.shape == (2, ROWS, COLS)
    torch.testing.assert_close(dist.probabilities.double().sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))
    top = dist.top_k(3)
    assert top[0][0][:2] == (-3.5, 40.0) and top[1][0][:2] == (-3.5, 40.0)
    assert top[0][0][2] >= top[0][1][2] >= top[0][2][2]
    assert float(dist.probability_at(-3.5, 40.0)[0]) == pytest.approx(top[0][0][2])
    assert 0 < float(dist.location_mass[0]) <= 1

    path = dist.write_geotiff(tmp_path / "where.tif", index=0)
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4326 and src.res == (0.25, 0.25) and (src.height, src.width) == (ROWS, COLS)
        row, col = src.index(-3.5, 40.0)
        data = src.read(1)
        assert (row, col) == (row_of_lat(40.0), col_of_lon(-3.5))
        assert divmod(int(data.argmax()), COLS) == (row, col)  # the brightest pixel is the constructed answer
        # pixel centres sit on the grid values
        assert src.xy(row, col) == pytest.approx((-3.5, 40.0))
    assert not list(tmp_path.glob("*.tmp*"))


def test_distribution_equals_plain_causal_passes_for_random_weights(vocab_file):
    """The one-pass map (every latitude at position 1, seeing only the sentinel) equals P(lat) * P(lon | lat)
    from ordinary causal passes over "[S_1] lat"."""
    model = _model(vocab_file)
    vocab = model._coords_text_tokenizer().tokenizer.get_vocab()
    tm = model.sampler.model
    with torch.no_grad():  # soften the random logits so that many cells carry probability
        tm.decoder_embeddings["coords"].token_emb.weight.mul_(0.02)
    s2 = torch.randn(1, 12, 32, 32)
    dist = model.location_distribution({"S2L2A": s2}, lat_chunk=100)
    pieces, _, _ = model._prepare_inputs(model._collect({"S2L2A": s2}, {}), 16)
    context = tm.encode([(k, v, None) for k, v in pieces])
    with torch.no_grad():
        first = tm.decode_sequence_logits(context, "coords", torch.tensor([[SEQUENCE_START_ID]]))[0, 0]
        lat_ids = [i for t, i in vocab.items() if t.startswith("lat=")]
        lon_ids = [i for t, i in vocab.items() if t.startswith("lon=")]
        p_lat = first.double().softmax(-1)
        expected, cells = {}, [("lat=-33.75", "lon=151.25"), ("lat=0.00", "lon=0.00"), ("lat=89.50", "lon=180.00")]
        for lat_t, lon_t in cells:
            second = tm.decode_sequence_logits(context, "coords", torch.tensor([[SEQUENCE_START_ID, vocab[lat_t]]]))
            p_lon = second[0, 1].double().softmax(-1)
            pair = p_lat[vocab[lat_t]] * p_lon[vocab[lon_t]]
            if lon_t == "lon=180.00":  # the same meridian as -180: one cell
                pair = pair + p_lat[vocab[lat_t]] * p_lon[vocab["lon=-180.00"]]
            expected[(lat_t, lon_t)] = pair
        total = sum(p_lat[i] * tm.decode_sequence_logits(
            context, "coords", torch.tensor([[SEQUENCE_START_ID, i]]))[0, 1].double().softmax(-1)[lon_ids].sum()
            for i in lat_ids[::60])  # a subset of latitudes: the mass estimate below uses all of them
    for (lat_t, lon_t), pair in expected.items():
        lat, lon = float(lat_t[4:]), float(lon_t[4:])
        got = float(dist.probability_at(lon, lat)[0]) * float(dist.location_mass[0])
        assert got == pytest.approx(float(pair), rel=1e-3), (lat_t, lon_t)
    assert float(total) < float(dist.location_mass[0]) <= float(p_lat[lat_ids].sum()) + 1e-9


def test_decoding_is_causal_and_greedy_follows_the_argmax(vocab_file):
    model = _model(vocab_file)
    tm = model.sampler.model
    s2 = torch.randn(2, 12, 32, 32)
    pieces, _, _ = model._prepare_inputs(model._collect({"S2L2A": s2}, {}), 16)
    context = tm.encode([(k, v, None) for k, v in pieces])
    a = torch.tensor([[SEQUENCE_START_ID, 100, 200, 300]] * 2)
    b = a.clone()
    b[:, 3] = 999
    with torch.no_grad():
        la, lb = tm.decode_sequence_logits(context, "coords", a), tm.decode_sequence_logits(context, "coords", b)
    torch.testing.assert_close(la[:, :3], lb[:, :3])  # a later token never changes earlier logits
    assert not torch.allclose(la[:, 3], lb[:, 3])
    ids = model.generate_tokens({"S2L2A": s2})["coords"]
    with torch.no_grad():
        teacher = tm.decode_sequence_logits(context, "coords", torch.cat([a[:, :1], ids[:, :-1]], dim=1))
    stopped = torch.isin(ids, torch.tensor([EOS_ID, 6])).cumsum(1).roll(1, 1).clamp(max=1).bool()
    stopped[:, 0] = False
    assert torch.equal(teacher.argmax(-1)[~stopped], ids[~stopped])


def test_coords_chain_into_later_outputs_and_errors(vocab_file):
    model = _model(vocab_file, outputs=("coords", "LULC"))
    assert "coords" in model.sampler.model.encoder_embeddings  # chained: LULC is conditioned on the coords
    out = model({"S2L2A": torch.randn(1, 12, 32, 32)}, seed=0)
    assert out["coords"].shape == (1, 2) and out["LULC"].shape == (1, 10, 32, 32)
    plain = _model(vocab_file, outputs=("LULC",))
    from terramind_ft.errors import ModalityError

    with pytest.raises(ModalityError, match="coords among the outputs"):
        plain.location_distribution({"S2L2A": torch.randn(1, 12, 32, 32)})


def test_great_circle():
    assert great_circle_km(0, 0, 0, 1) == pytest.approx(111.2, abs=0.1)
    assert great_circle_km(-3.7, 40.4, 2.35, 48.86) == pytest.approx(1053, abs=5)  # Madrid - Paris
    assert great_circle_km(179.9, 0, -179.9, 0) == pytest.approx(22.2, abs=0.1)
    assert math.isclose(great_circle_km(10, 20, 10, 20), 0.0, abs_tol=1e-9)


def test_images_from_a_location_alone(vocab_file):
    """coords as the only input: the outputs take image_size (default 224); given image inputs, image_size is
    refused (their size is the size)."""
    from terramind_ft.errors import ConfigError

    model = TerraMindGeneration(["coords"], ["LULC"], size="tiny", timesteps=1,
                                tokenizer_kwargs={"coords": {"tokenizer_file": str(vocab_file)}}).eval()
    where = torch.tensor([[-3.7, 40.4], [8.5, 47.4]])
    assert model({"coords": where}, seed=0, image_size=(32, 48))["LULC"].shape == (2, 10, 32, 48)
    assert model.generate_tokens({"coords": where}, seed=0)["LULC"].shape == (2, 14, 14)
    with_image = TerraMindGeneration(["S2L2A"], ["LULC"], size="tiny", timesteps=1).eval()
    with pytest.raises(ConfigError, match="image_size"):
        with_image({"S2L2A": torch.randn(1, 12, 32, 32)}, image_size=64)


def test_a_rows_result_does_not_depend_on_the_padding_of_its_batch():
    """Coords of different lengths in one batch: the padded tokens are masked out of the generator's encoder and
    of the decoder's cross-attention (as the reference's generation encoder), so a short row decodes the same
    alone as beside a long one; unmasked, the padding would change it."""
    from terramind_ft.models.terramind.decoder import TerraMind

    torch.manual_seed(0)
    tm = TerraMind("tiny", encoder_keys=["untok_sen2l2a@224", "coords"], decoder_keys=["tok_lulc@224"]).eval()
    x = torch.randn(2, 12, 32, 32)
    ids = torch.tensor([[100, 200, 3, 0], [300, 3, 0, 0]])
    with torch.no_grad():
        context, mask = tm.encode_masked([("untok_sen2l2a@224", x, None),
                                          ("coords", {"tensor": ids, "input_mask": ids == 0}, None)])
        batched = tm.decode_logits(context, "tok_lulc@224", None, (2, 2), mask)
        alone_context, alone_mask = tm.encode_masked([("untok_sen2l2a@224", x[1:], None),
                                                      ("coords", {"tensor": ids[1:, :2],
                                                                  "input_mask": ids[1:, :2] == 0}, None)])
        alone = tm.decode_logits(alone_context, "tok_lulc@224", None, (2, 2), alone_mask)
        unmasked = tm.decode_logits(tm.encode([("untok_sen2l2a@224", x, None), ("coords", ids, None)]),
                                    "tok_lulc@224", None, (2, 2))
    assert alone_mask is None and mask is not None and mask.shape == (2, 1, 4 + 4)
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(unmasked[1], alone[0], atol=1e-4)
