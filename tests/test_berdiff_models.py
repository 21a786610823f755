"""The two networks: official sizes and state-dict names, the binary code, loading official files."""

from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")

from napari_disyre.berdiff.autoencoder import BinaryAutoencoder, load_official_state  # noqa: E402
from napari_disyre.berdiff.latent_unet import build_latent_unet, flip_probability  # noqa: E402
from napari_disyre.berdiff.presets import AutoencoderConfig, get_berdiff_preset  # noqa: E402
from napari_disyre.errors import CheckpointError, DisyreError  # noqa: E402

from .berdiff_tiny import TINY_AE  # noqa: E402


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_official_autoencoder_size_and_state_dict_names():
    ae = BinaryAutoencoder(get_berdiff_preset("official", in_channels=4).autoencoder)
    # method document §2.2: encoder 1,944,640; quantizer 65,664; generator 2,237,124 + logsigma 9,380
    assert count(ae.encoder) == 1_944_640
    assert count(ae.quantize) == 65_664
    assert count(ae.generator) == 2_237_124 + 9_380
    assert count(ae) == 4_256_808  # "4.26 M"
    shapes = {k: tuple(v.shape) for k, v in ae.state_dict().items()}
    assert shapes["quantize.proj.0.weight"] == (128, 256, 1, 1)
    assert shapes["quantize.embed.weight"] == (128, 256)
    assert shapes["encoder.blocks.0.weight"] == (32, 4, 3, 3)
    assert shapes["encoder.blocks.1.conv_out.weight"] == (32, 32, 1, 1)  # present though 32 -> 32
    assert shapes["encoder.blocks.3.conv.weight"] == (32, 32, 3, 3)  # Downsample
    assert shapes["encoder.blocks.13.q.weight"] == (128, 128, 1, 1)  # middle attention
    assert shapes["encoder.blocks.15.weight"] == (128,)  # final GroupNorm
    assert shapes["encoder.blocks.16.weight"] == (256, 128, 3, 3)
    assert shapes["generator.blocks.0.weight"] == (256,)  # norm_first
    assert shapes["generator.blocks.3.proj_out.weight"] == (128, 128, 1, 1)
    assert shapes["generator.blocks.7.conv.weight"] == (128, 128, 3, 3)  # Upsample
    assert shapes["generator.blocks.8.conv1.weight"] == (64, 128, 3, 3)
    assert shapes["generator.blocks.17.weight"] == (4, 32, 3, 3)
    assert shapes["generator.logsigma.0.weight"] == (32, 32, 3, 3)
    assert shapes["generator.logsigma.2.weight"] == (4, 32, 1, 1)
    assert not any(k.startswith(("encoder.blocks.17", "generator.blocks.18")) for k in shapes)


def test_official_latent_unet_size():
    unet = build_latent_unet(get_berdiff_preset("official").unet)
    assert count(unet) == 36_034_432
    assert unet.config.in_channels == unet.config.out_channels == 128
    assert unet.config.sample_size == 32


def test_untrained_unet_predicts_flip_probability_one_half():
    unet = build_latent_unet(get_berdiff_preset("small").unet)
    x = torch.bernoulli(torch.full((2, 32, 16, 16), 0.5))
    assert torch.all(flip_probability(unet, x, 10) == 0.5)


def test_small_preset_latent_shapes():
    preset = get_berdiff_preset("small")
    ae = BinaryAutoencoder(preset.autoencoder).eval()
    with torch.no_grad():
        p = ae.bit_probabilities(torch.rand(1, 1, 128, 128))
    assert (
        p.shape == (1, 32, 16, 16) == (1, preset.unet.bits, preset.unet.latent_size, preset.unet.latent_size)
    )
    assert p.min() > 0 and p.max() < 1


def test_configs_that_cannot_be_built_are_refused():
    with pytest.raises(DisyreError, match="norm_groups"):
        AutoencoderConfig(nf=8, norm_groups=32)
    with pytest.raises(DisyreError, match="multiple of 8"):
        AutoencoderConfig(image_size=100)
    with pytest.raises(DisyreError, match="unknown preset"):
        get_berdiff_preset("large")


def test_code_is_embedded_as_the_sum_of_the_embeddings_of_its_set_bits():
    ae = BinaryAutoencoder(TINY_AE)
    with torch.no_grad():
        ae.quantize.embed.weight.copy_(torch.arange(32.0).reshape(4, 8))
    code = torch.tensor([1.0, 0.0, 1.0, 0.5]).reshape(1, 4, 1, 1)
    embedded = ae.quantize.embed_code(code).flatten()
    expected = torch.arange(0.0, 8) + torch.arange(16.0, 24) + 0.5 * torch.arange(24.0, 32)
    assert torch.equal(embedded, expected)


def test_straight_through_sends_the_binary_code_forward_and_gradients_to_the_encoder():
    torch.manual_seed(0)
    ae = BinaryAutoencoder(TINY_AE)
    x = torch.rand(2, 1, 16, 16)
    out = ae(x, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        p = ae.bit_probabilities(x)
        code = torch.bernoulli(p, generator=torch.Generator().manual_seed(5))
        assert torch.allclose(out, ae.decode(code), atol=1e-6)
    out.abs().mean().backward()
    assert ae.encoder.blocks[0].weight.grad.abs().sum() > 0
    assert ae.quantize.proj[0].weight.grad.abs().sum() > 0


def test_an_official_binaryae_file_loads_without_unpickling(tmp_path):
    torch.manual_seed(1)
    source = BinaryAutoencoder(TINY_AE)
    state = {f"ae.{k}": v for k, v in source.state_dict().items()}
    state["disc.main.0.weight"] = torch.zeros(2, 2)
    state["perceptual.net.slice1.0.weight"] = torch.zeros(3)
    path = tmp_path / "binaryae_ema_30000.th"
    torch.save(state, path)
    target = BinaryAutoencoder(TINY_AE)
    load_official_state(path, target)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_an_official_file_with_code_in_it_is_refused(tmp_path):
    path = tmp_path / "binaryae_1.th"
    with open(path, "wb") as handle:
        pickle.dump({"ae.encoder.x": Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="plain tensors"):
        load_official_state(path, BinaryAutoencoder(TINY_AE))


def test_an_official_file_of_another_size_says_what_does_not_fit(tmp_path):
    other = BinaryAutoencoder(TINY_AE.__class__(**{**TINY_AE.to_dict(), "codebook_bits": 8}))
    path = tmp_path / "binaryae_2.th"
    torch.save({f"ae.{k}": v for k, v in other.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_official_state(path, BinaryAutoencoder(TINY_AE))
