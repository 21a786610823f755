"""Training both stages for a few steps, saving, reloading, and the checkpoint's error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_disyre.berdiff.bernoulli import BernoulliSchedule, training_loss  # noqa: E402
from napari_disyre.berdiff.checkpoint import BerDiffModel, load_berdiff, save_berdiff  # noqa: E402
from napari_disyre.berdiff.inference import InferenceSettings, restore_slices  # noqa: E402
from napari_disyre.berdiff.latent_unet import build_latent_unet, flip_probability  # noqa: E402
from napari_disyre.berdiff.layout import AE_WEIGHTS, METADATA_FILE, is_berdiff_folder  # noqa: E402
from napari_disyre.berdiff.presets import get_berdiff_preset  # noqa: E402
from napari_disyre.berdiff.training import (  # noqa: E402
    EMA,
    OptimiserSettings,
    stage_settings,
    train_autoencoder,
    train_latent_diffusion,
)
from napari_disyre.errors import CheckpointError, DisyreError, OutputExistsError  # noqa: E402

from .berdiff_tiny import TINY_AE, TINY_UNET, smooth_slices, tiny_networks  # noqa: E402


def source(step: int) -> np.ndarray:
    return smooth_slices(8, seed=step)[:, None]


def test_ema_update_by_hand():
    """Decay min(0.75, (1 + n) / (10 + n)): 0.1 at the first update, 0.75 once warmed up."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.75)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(0.1 * 1.0 + 0.9 * 3.0)
    warm = EMA(model, decay=0.75, updates=100)
    with torch.no_grad():
        model.weight.fill_(7.0)
    warm.update(model)
    assert (warm.updates, warm.model.weight.item()) == (101, pytest.approx(0.75 * 3.0 + 0.25 * 7.0))


def test_ema_forgets_the_initial_weights_of_a_short_run():
    """The small preset's autoencoder gets 200 EMA updates at 0.995: without the warm-up the random
    start would keep a share of 0.995^200 = 0.37 in the saved weights; with it, under 1e-12."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema = EMA(model, decay=0.995)
        model.weight.fill_(0.0)
    for _ in range(200):
        ema.update(model)
    assert 0.0 <= ema.model.weight.item() < 1e-12


def held_out_bits(unet, ae) -> float:
    """BCE (bits) of ``unet`` on codes of 64 unseen slices, with fixed timesteps and noise."""
    with torch.no_grad():
        p = ae.bit_probabilities(torch.from_numpy(smooth_slices(64, seed=999)[:, None]))
        code = torch.bernoulli(p, generator=torch.Generator().manual_seed(0))
        loss = training_loss(
            lambda x, t: flip_probability(unet, x, t),
            BernoulliSchedule(),
            code,
            generator=torch.Generator().manual_seed(1),
        )
    return loss.item()


def test_autoencoder_then_diffusion_training_reduce_their_losses():
    fast = dict(ema_decay=0.9, ema_every=1)
    ae = train_autoencoder(source, TINY_AE, OptimiserSettings(steps=20, learning_rate=3e-3, **fast))
    assert np.mean(ae.losses[-5:]) < 0.6 * np.mean(ae.losses[:5])
    assert not ae.ema.training and all(not p.requires_grad for p in ae.ema.parameters())
    seen: list[int] = []
    unet = train_latent_diffusion(
        source,
        ae.ema,
        TINY_UNET,
        BernoulliSchedule(),
        OptimiserSettings(steps=30, learning_rate=1e-2, **fast),
        on_step=lambda step, loss: seen.append(step),
    )
    assert seen == list(range(1, 31))
    # the output convolution starts at zero: flip probability 0.5 everywhere, exactly 1 bit
    assert unet.losses[0] == pytest.approx(1.0, abs=1e-6)
    assert held_out_bits(build_latent_unet(TINY_UNET), ae.ema) == pytest.approx(1.0, abs=1e-6)
    assert held_out_bits(unet.ema, ae.ema) < 0.9


def test_stage_settings_follow_the_official_recipe():
    official = get_berdiff_preset("official")
    ae = stage_settings(official, "autoencoder")
    assert (ae.steps, ae.learning_rate, ae.ema_decay, ae.ema_every) == (
        30_000,
        pytest.approx(1.08e-4),
        0.995,
        10,
    )
    diffusion = stage_settings(official, "diffusion", steps=5)
    assert (diffusion.steps, diffusion.learning_rate, diffusion.ema_decay, diffusion.ema_every) == (
        5,
        1e-4,
        0.999,
        1,
    )
    assert diffusion.weight_decay == 0.0
    with pytest.raises(DisyreError, match="unknown training stage"):
        stage_settings(official, "gan")


def test_bad_batches_are_refused_with_the_step():
    settings = OptimiserSettings(steps=3)
    with pytest.raises(DisyreError, match=r"batch 0 .* in \[0, 1\]"):
        train_autoencoder(lambda k: np.full((2, 1, 16, 16), 2.0), TINY_AE, settings)
    with pytest.raises(DisyreError, match="ran out after 1 batches"):
        train_autoencoder(iter([source(0)]), TINY_AE, settings)
    with pytest.raises(DisyreError, match="channel"):
        train_autoencoder(lambda k: np.zeros((2, 3, 16, 16)), TINY_AE, settings)


def detector() -> BerDiffModel:
    ae, unet = tiny_networks()
    return BerDiffModel(
        autoencoder=ae,
        unet=unet,
        unet_config=TINY_UNET,
        schedule=BernoulliSchedule(forward="symmetric"),
        inference=InferenceSettings(noise_level=4, threshold=0.55, seed=2),
        preprocessing={"spacing": [1.5, 1.5, 1.5]},
        healthy_score_quantiles={"0.99": 0.125},
    )


def anomaly_map(model: BerDiffModel) -> np.ndarray:
    gen = restore_slices(smooth_slices(2), model.autoencoder, model.unet, model.schedule, model.inference)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value.anomaly_map


def test_save_then_load_gives_identical_maps_and_metadata(tmp_path):
    model = detector()
    folder = save_berdiff(tmp_path / "model", model)
    assert is_berdiff_folder(folder) and sorted(p.name for p in folder.iterdir()) == [
        "autoencoder.safetensors",
        "berdiff.json",
        "latent_unet.safetensors",
    ]
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["method"] == "berdiff" and meta["schedule"]["forward"] == "symmetric"
    assert meta["inference"] == {"noise_level": 4, "threshold": 0.55, "sample_code": True, "seed": 2}
    loaded = load_berdiff(folder)
    assert loaded.schedule == model.schedule and loaded.inference == model.inference
    assert loaded.autoencoder.config == TINY_AE and loaded.unet_config == TINY_UNET
    assert loaded.healthy_score_quantiles == {"0.99": 0.125}
    assert loaded.preprocessing == {"spacing": [1.5, 1.5, 1.5]}
    assert "L=4, P=0.55" in loaded.summary()
    assert np.array_equal(anomaly_map(loaded), anomaly_map(model))
    with pytest.raises(OutputExistsError):
        save_berdiff(folder, model)


@pytest.fixture
def saved(tmp_path):
    return save_berdiff(tmp_path / "model", detector())


def edit_metadata(folder, **changes):
    path = folder / METADATA_FILE
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_mislabelled_folder(saved):
    edit_metadata(saved, method="disyre")
    with pytest.raises(CheckpointError, match="holds method 'disyre'.*mislabelled"):
        load_berdiff(saved)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"format": "napari-disyre"},
            "not a napari-disyre Bernoulli diffusion metadata file.*'napari-disyre'",
        ),
        ({"format_version": 99}, "newer napari-disyre.*version 99, this one reads up to 1.*upgrade"),
        ({"format_version": "two"}, "format version 'two' is not a whole number"),
    ],
    ids=["other-format", "newer-version", "bad-version"],
)
def test_foreign_or_newer_metadata_is_refused(saved, changes, message):
    edit_metadata(saved, **changes)
    with pytest.raises(CheckpointError, match=message) as error:
        load_berdiff(saved)
    assert str(saved / METADATA_FILE) in str(error.value)


def test_metadata_that_is_not_an_object_is_refused(saved):
    (saved / METADATA_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="metadata holds a JSON list, not an object"):
        load_berdiff(saved)


def test_corrupted_weights(saved):
    data = (saved / AE_WEIGHTS).read_bytes()
    (saved / AE_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="autoencoder.safetensors: corrupt or truncated"):
        load_berdiff(saved)


def test_weights_that_do_not_fit_the_config(saved):
    meta = json.loads((saved / METADATA_FILE).read_text())
    edit_metadata(saved, latent_unet={**meta["latent_unet"], "block_out_channels": [8, 32]})
    with pytest.raises(CheckpointError, match="latent_unet.safetensors: the weights do not fit"):
        load_berdiff(saved)


def test_malformed_metadata(saved):
    (saved / METADATA_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_berdiff(saved)
    (saved / METADATA_FILE).write_text(json.dumps({"format": "napari-disyre-berdiff", "method": "berdiff"}))
    with pytest.raises(CheckpointError, match="malformed Bernoulli diffusion metadata: .*autoencoder: field required"):
        load_berdiff(saved)


def test_a_disyre_folder_or_a_missing_one_is_named(tmp_path):
    (tmp_path / "disyre_model" / "unet").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="found a DISYRE checkpoint"):
        load_berdiff(tmp_path / "disyre_model")
    with pytest.raises(CheckpointError, match="not found"):
        load_berdiff(tmp_path / "nowhere")
