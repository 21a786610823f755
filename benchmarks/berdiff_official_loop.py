"""Proof that napari-disyre's masked Bernoulli diffusion is the authors' method: the project's loop
against the official loop, same weights, same Bernoulli draws.

How to run (the official code has no licence: it is never copied into this repository)::

    # the `fetch` of github:JuliaWolleb/Anomaly_berdiff (HEAD cf2342c), cloned OUTSIDE the repository
    git clone <mirror of JuliaWolleb/Anomaly_berdiff> ../ext/Anomaly_berdiff
    PYTHONPATH=src python benchmarks/berdiff_official_loop.py --official ../ext/Anomaly_berdiff

What it does:

1. builds the official networks from the official modules (``Binary_AE/models/binaryae.py``
   ``BinaryAutoEncoder``; ``guided_diffusion.script_util.create_model_and_diffusion`` with the
   official defaults), random weights (the UNet's zero-initialised layers perturbed, or it would
   predict 0.5 everywhere and never mask);
2. saves them the way the official code does (``binaryae_ema_0.th``: the whole-GAN state dict under
   ``ae.``, with ``disc.`` / ``perceptual.`` entries; ``emabrats0.999_000000.pt``: the plain UNet
   state dict), imports them with ``napari-disyre import-berdiff`` (README defaults: 4 contrasts,
   256 x 256, 128 bits, L = 200, P = 0.5, unless given);
3. runs, on one synthetic 4-contrast slice, the official path (AE code, ``ddim_sample_loop_anomaly``,
   decoding, ``sum_c (recon - x)^2`` as ``latent_sample_anomaly.py``) and the project's
   ``restore_slices``, both drawing every Bernoulli variable from one tape of uniforms (outcome
   ``u < p``; draw k uses a generator seeded with k): the official ``torch.bernoulli`` and
   ``Binomial(1, p).sample()`` and the project's per-slice noise are replaced by the tape, since the
   official driver's own random stream cannot be replayed (method document §9);
4. prints a table: the code, x_t after every step, the final mask and the restored code compared
   bit for bit, the restoration and the anomaly map as the largest absolute difference.

Only what the official code needs and this machine lacks is stubbed, here and not in the clone:
``visdom``, ``blobfile``, ``lpips``, ``torch_fidelity``, ``torchvision``, ``timm``, ``mpi4py``,
``torcheval``, ``azureml``, ``einops`` (none is on the anomaly path), and ``.cuda()`` is the identity (CPU run).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

STUBBED = (
    "visdom",
    "blobfile",
    "lpips",
    "torch_fidelity",
    "torchvision",
    "timm",
    "mpi4py",
    "torcheval",
    "azureml",
    "einops",
)


class _AnyAttribute(type):
    def __getattr__(cls, name):
        return _Anything


class _Anything(metaclass=_AnyAttribute):
    """Stands for any stubbed class or function: constructible, callable, with any attribute."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name):
        return _Anything()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an empty module for every name under a stubbed root package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda name: _Anything  # type: ignore[attr-defined]
        return module

    def exec_module(self, module) -> None:
        pass


class Tape:
    """Uniforms shared by both loops: draw k is ``torch.rand(shape)`` from a generator seeded with
    ``seed + k``; every outcome ``u < p`` is logged."""

    def __init__(self, seed: int = 1234) -> None:
        self.seed, self.draws = seed, []

    def bernoulli(self, p: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + len(self.draws))
        outcome = (torch.rand(p.shape, generator=gen) < p).to(p.dtype)
        self.draws.append(outcome.clone())
        return outcome


def official_modules(root: Path):
    """The official BinaryAutoEncoder class, the diffusion factory and its diffusion module."""
    sys.meta_path.insert(0, _StubFinder())
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    sys.path[:0] = [str(root / "Binary_AE"), str(root / "Bernoulli_Diffusion")]
    with contextlib.redirect_stdout(None):  # the official modules print while building
        from guided_diffusion import binomial_diffusion, script_util
        from models.binaryae import BinaryAutoEncoder
    return BinaryAutoEncoder, script_util, binomial_diffusion


def build_official(root: Path, args: argparse.Namespace, folder: Path):
    """Random official networks, saved as the official code saves them."""
    BinaryAutoEncoder, script_util, binomial_diffusion = official_modules(root)
    hparams = types.SimpleNamespace(
        n_channels=args.channels, nf=32, res_blocks=2, codebook_size=args.code_size, emb_dim=256,
        ch_mult=[1, 2, 2, 4], img_size=args.image_size, attn_resolutions=[16], quantizer="binary",
        beta=0.25, deterministic=False, use_tanh=False, gen_mul=1.0, norm_first=True,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    with contextlib.redirect_stdout(None):
        ae = BinaryAutoEncoder(hparams).eval()
        defaults = script_util.model_and_diffusion_defaults()
        defaults.update(image_size=args.image_size // 8, img_channels=args.code_size)
        unet, diffusion = script_util.create_model_and_diffusion(**defaults)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        unet.out[2].bias.fill_(-1.0)  # mostly unflipped bits, a few above P
    unet.eval()
    gan = {f"ae.{k}": v for k, v in ae.state_dict().items()}
    gan["disc.main.0.weight"] = torch.zeros(64, args.channels, 4, 4)
    gan["perceptual.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    torch.save(gan, folder / "binaryae_ema_0.th")
    torch.save(unet.state_dict(), folder / "emabrats0.999_000000.pt")
    return ae, unet, diffusion, binomial_diffusion


def synthetic_slice(channels: int, size: int, seed: int) -> torch.Tensor:
    """Smooth blobs, min-max scaled over all channels together as the official loader does."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = np.zeros((channels, size, size))
    for c in range(channels):
        for _ in range(6):
            cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.05, 0.2)]
            img[c] += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = (img - img.min()) / (img.max() - img.min())
    return torch.from_numpy(img.astype(np.float32))[None]


def run_official(ae, unet, diffusion, binomial_diffusion, img, args, tape: Tape):
    """The official anomaly path of ``latent_sample_anomaly.py`` with the tape's draws."""

    class TapeBinomial:
        def __init__(self, total_count, probs):
            self.probs = probs

        def sample(self):
            return tape.bernoulli(self.probs)

    real_bernoulli, binomial_diffusion.Binomial = torch.bernoulli, TapeBinomial
    torch.bernoulli = lambda p, *a, **k: tape.bernoulli(p)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(None):
            code = ae(img, code_only=True).detach()
            size = args.image_size // 8
            sample, mask = diffusion.ddim_sample_loop_anomaly(
                unet, (1, args.code_size, size, size), code,
                prob_threshold=args.flip_threshold, noise_level=args.noise_level, device=torch.device("cpu"),
            )  # fmt: skip
            recon, _, _ = ae(torch.zeros_like(img), code_only=False, code=sample)
    finally:
        torch.bernoulli = real_bernoulli
    recon = torch.clamp(recon, 0, 1)
    return {
        "mask": mask.bool(),
        "code": sample,
        "restoration": recon[0],
        "map": (recon[0] - img[0]).square().sum(0),
    }


def run_project(folder: Path, img, tape: Tape):
    """The project's loop (``restore_slices``) on the imported folder, with the tape's draws."""
    from napari_disyre.berdiff import inference
    from napari_disyre.berdiff.checkpoint import load_berdiff
    from napari_disyre.restoration import run_to_end

    model = load_berdiff(folder)
    captured = {}
    real_step, real_noise = inference.reverse_step, inference.SliceNoise

    def reverse_step(flip_model, schedule, state, t, threshold, noise, start=0):
        x0 = real_step(flip_model, schedule, state, t, threshold, noise, start)
        captured.update(mask=state.mask.clone(), code=x0)
        return x0

    class TapeNoise:
        def __init__(self, seed, n_slices):
            pass

        def bernoulli(self, p, start=0):
            return tape.bernoulli(p)

    inference.reverse_step, inference.SliceNoise = reverse_step, TapeNoise
    try:
        engine = inference.restore_slices(
            img.numpy(), model.autoencoder, model.unet, model.schedule, model.inference,
            batch_size=1, restoration_every=0,
        )  # fmt: skip
        result = run_to_end(engine)
    finally:
        inference.reverse_step, inference.SliceNoise = real_step, real_noise
    restoration = torch.from_numpy(result.restoration[0])
    return {**captured, "restoration": restoration, "map": torch.from_numpy(result.anomaly_map[0])}


def compare(
    official: dict, project: dict, tapes: tuple[Tape, Tape], seconds: tuple[float, float]
) -> list[str]:
    """The table's rows: bit-for-bit for the binary quantities, max |difference| for the images."""
    a, b = tapes
    steps_equal = sum(torch.equal(x, y) for x, y in zip(a.draws[2:], b.draws[2:], strict=False))
    rows = [
        ("draws taken (code, x_L, one per reverse step t >= 1)", f"{len(a.draws)}", f"{len(b.draws)}", ""),
        ("AE code of the slice", "", "", "equal" if torch.equal(a.draws[0], b.draws[0]) else "DIFFERS"),
        ("x_L (noised code)", "", "", "equal" if torch.equal(a.draws[1], b.draws[1]) else "DIFFERS"),
        ("x_t after every reverse step", "", "", f"{steps_equal} of {len(a.draws) - 2} equal"),
        (
            "final mask (bits with flip prob > P, union)",
            f"{int(official['mask'].sum())} bits",
            f"{int(project['mask'].sum())} bits",
            "equal" if torch.equal(official["mask"], project["mask"]) else "DIFFERS",
        ),
        ("restored code (t = 0, real-valued)", "", "", "equal" if torch.equal(official["code"], project["code"]) else
            f"max |diff| {float((official['code'] - project['code']).abs().max()):.2e}"),
        ("restoration (decoded, clamped)", "", "", f"max |diff| {float((official['restoration'] - project['restoration']).abs().max()):.2e}"),
        ("anomaly map sum_c (x^ - x)^2", f"max {float(official['map'].max()):.4f}", f"max {float(project['map'].max()):.4f}",
            f"max |diff| {float((official['map'] - project['map']).abs().max()):.2e}"),
        ("wall time (s)", f"{seconds[0]:.1f}", f"{seconds[1]:.1f}", ""),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [
        f"| {'quantity':<{width}} | official | project | comparison |",
        f"|{'-' * (width + 2)}|---|---|---|",
    ]
    return lines + [f"| {r[0]:<{width}} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="clone of JuliaWolleb/Anomaly_berdiff")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--code-size", type=int, default=128)
    parser.add_argument("--noise-level", type=int, default=200)
    parser.add_argument("--flip-threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from napari_disyre.cli import main as cli

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ae, unet, diffusion, bd = build_official(args.official.resolve(), args, folder)
        imported = folder / "imported"
        argv = ["import-berdiff", "--autoencoder", str(folder / "binaryae_ema_0.th"), "--unet",
                str(folder / "emabrats0.999_000000.pt"), "--out", str(imported), "--channels", str(args.channels),
                "--image-size", str(args.image_size), "--code-size", str(args.code_size),
                "--noise-level", str(args.noise_level), "--flip-threshold", str(args.flip_threshold)]  # fmt: skip
        with contextlib.redirect_stdout(None):
            assert cli(argv) == 0, "import-berdiff refused the official files"
        img = synthetic_slice(args.channels, args.image_size, args.seed)
        tapes, seconds = (Tape(), Tape()), []
        started = time.perf_counter()
        official = run_official(ae, unet, diffusion, bd, img, args, tapes[0])
        seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        project = run_project(imported, img, tapes[1])
        seconds.append(time.perf_counter() - started)
    print(
        f"official {args.official.name} vs napari-disyre; {args.channels} x {args.image_size}^2, "
        f"{args.code_size}-bit code, L = {args.noise_level}, P = {args.flip_threshold}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU"
    )
    print("\n".join(compare(official, project, tapes, (seconds[0], seconds[1]))))


if __name__ == "__main__":
    main()
