"""The authors' checkpoints: files saved the way the official code saves them (a whole-BinaryGAN state
dict with ``ae.``/``disc.``/``perceptual.`` prefixes; a plain guided-diffusion UNet state dict) import
through ``napari-disyre import-berdiff``, every tensor landing, and the folder says where they came
from. The comparison with the official code itself is ``benchmarks/berdiff_official_loop.py``."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_disyre.berdiff.autoencoder import BinaryAutoencoder  # noqa: E402
from napari_disyre.berdiff.checkpoint import load_berdiff  # noqa: E402
from napari_disyre.berdiff.latent_unet import build_latent_unet  # noqa: E402
from napari_disyre.berdiff.official import OfficialSettings  # noqa: E402
from napari_disyre.cli import main  # noqa: E402
from napari_disyre.detection.detectors import contrasts_of  # noqa: E402


def _save_official_pair(tmp_path, settings: OfficialSettings, seed: int = 0):
    """Random official-architecture weights written as the official code writes them."""
    torch.manual_seed(seed)
    ae = BinaryAutoencoder(settings.autoencoder())
    gan = {f"ae.{k}": v for k, v in ae.state_dict().items()}
    gan["disc.main.0.weight"] = torch.zeros(64, settings.channels, 4, 4)  # discarded by the import
    gan["perceptual.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
    unet = build_latent_unet(settings.unet())
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ae_path, unet_path = tmp_path / "binaryae_ema_30000.th", tmp_path / "emabrats0.999_010000.pt"
    torch.save(gan, ae_path)
    torch.save(unet.state_dict(), unet_path)
    return ae, unet, ae_path, unet_path


def test_the_official_unet_at_the_readme_settings_has_the_papers_36_034_432_parameters():
    official = build_latent_unet(OfficialSettings().unet())
    assert sum(p.numel() for p in official.parameters()) == 36_034_432
    names = list(official.state_dict())
    assert names[:2] == ["time_embed.0.weight", "time_embed.0.bias"]
    assert "input_blocks.4.1.qkv.weight" in names and "output_blocks.11.0.skip_connection.weight" in names
    assert names[-2:] == ["out.2.weight", "out.2.bias"]


def test_import_berdiff_lands_every_official_tensor_and_records_the_origin(tmp_path, capsys):
    settings = OfficialSettings()  # the README's: 4 contrasts, 256 x 256, 128 bits, L = 200, P = 0.5
    ae, unet, ae_path, unet_path = _save_official_pair(tmp_path, settings)
    out = tmp_path / "imported"
    argv = ["import-berdiff", "--autoencoder", str(ae_path), "--unet", str(unet_path), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    model = load_berdiff(out)
    for mine, theirs in ((model.autoencoder, ae), (model.unet, unet)):
        mine_state, their_state = mine.state_dict(), theirs.state_dict()
        assert mine_state.keys() == their_state.keys()
        assert all(torch.equal(mine_state[k], their_state[k]) for k in their_state)
    meta = json.loads((out / "berdiff.json").read_text())
    assert meta["latent_unet"]["network"] == "guided-diffusion"
    assert (meta["inference"]["noise_level"], meta["inference"]["threshold"]) == (200, 0.5)
    assert meta["autoencoder"]["in_channels"] == 4 and meta["schedule"]["forward"] == "code"
    assert meta["origin"]["unet"] == {
        "file": unet_path.name,
        "bytes": unet_path.stat().st_size,
        "sha256": hashlib.sha256(unet_path.read_bytes()).hexdigest(),
    }
    assert "origin: JuliaWolleb/Anomaly_berdiff" in printed and unet_path.name in printed
    assert "4 channel(s) 256x256, 128-bit 32x32 code, L=200, P=0.5" in printed
    # the official BraTS slices hold t1, t1ce, t2, flair: detection asks for one scan each, in that order
    assert contrasts_of(model) == ("t1", "t1ce", "t2", "flair")
    assert "--scan t1=PATH --scan t1ce=PATH --scan t2=PATH --scan flair=PATH" in printed
    # the imported networks give the flip probabilities of the weights they were given
    x = torch.bernoulli(torch.full((1, 128, 32, 32), 0.5))
    with torch.no_grad():
        assert torch.equal(model.unet(x, torch.tensor([7])), unet(x, torch.tensor([7])))
    assert main(argv) == 2  # the folder exists: refused, left as it is
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "problem, message",
    [
        ("pickled code", "cannot be read as plain tensors"),
        ("wrong code size", "do not fit the network: .* of the wrong shape"),
        ("a missing tensor", "1 missing .e.g. out.2.bias"),
        ("contrast names", "2 contrast names .t1, flair. for a 1-channel model"),
    ],
)
def test_import_berdiff_refuses_what_does_not_fit_and_writes_nothing(tmp_path, capsys, problem, message):
    settings = OfficialSettings(channels=1, code_size=8)
    _, unet, ae_path, unet_path = _save_official_pair(tmp_path, settings)
    extra = []
    if problem == "pickled code":
        torch.save({"weights": unet.state_dict(), "hparams": np.float64}, unet_path)  # a class: refused
    elif problem == "wrong code size":
        extra = ["--code-size", "16"]
    elif problem == "contrast names":
        extra = ["--contrasts", "t1,flair"]
    else:
        state = unet.state_dict()
        del state["out.2.bias"]
        torch.save(state, unet_path)
    out = tmp_path / "imported"
    argv = ["import-berdiff", "--autoencoder", str(ae_path), "--unet", str(unet_path), "--out", str(out)]
    assert main([*argv, "--channels", "1", "--code-size", "8", *extra]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


def test_import_berdiff_refuses_an_image_size_without_an_official_unet(tmp_path, capsys):
    argv = ["import-berdiff", "--autoencoder", "a.th", "--unet", "u.pt", "--out", str(tmp_path / "o")]
    assert main([*argv, "--image-size", "384"]) == 2
    assert "latent sizes [32, 64, 128]" in capsys.readouterr().err
