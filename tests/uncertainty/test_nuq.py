"""NUQ: vectorised torch query vs a per-query NumPy transcription of REFERENCE §1.4; fit/refit/serialise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taskbridge.uncertainty.nuq import NUQ, NUQConfig, fit_nuq


def nuq_reference(x: np.ndarray, y: np.ndarray, q: np.ndarray, k: int, h: float) -> np.ndarray:
    """One query at a time, literally: cosine top-k, RBF on raw features, prior term, u_epi."""
    out = []
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for qi in q:
        sim = xn @ (qi / np.linalg.norm(qi))
        nn_idx = np.argsort(-sim, kind="stable")[:k]
        kern = np.exp(-np.sum((x[nn_idx] - qi) ** 2, axis=1) / (2 * h * h))
        s = 1.0 + kern.sum()
        y1 = (np.sum(kern * y[nn_idx]) + y.mean()) / s
        y2 = (np.sum(kern * y[nn_idx] ** 2) + np.mean(y**2)) / s
        out.append((y2 - y1 * y1) / s)
    return np.asarray(out)


@pytest.fixture
def fit_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 15, generator=g) * 3.0
    y = torch.sigmoid(x[:, 4] + 0.3 * torch.randn(300, generator=g))
    return x, y


@pytest.mark.parametrize("k,h", [(20, 11.037089), (5, 2.0), (1, 0.7)])
def test_u_epi_matches_numpy_reference(fit_data, k, h) -> None:
    x, y = fit_data
    q = torch.randn(37, 15, generator=torch.Generator().manual_seed(2)) * 3.0
    nuq = NUQ(k=k, bandwidth=h).fit(x, y)
    ours = nuq.u_epi(q, chunk=8).double().numpy()  # several chunks
    ref = nuq_reference(x.double().numpy(), y.double().numpy(), q.double().numpy(), k, h)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-9)
    assert (ours >= 0).all()


def test_far_queries_are_uncertain_and_score_mapping(fit_data) -> None:
    x, y = fit_data
    nuq = NUQ(bandwidth=2.0).fit(x, y)
    near, far = x[:10] + 0.01, x[:10] * 40.0  # same direction, far away: kernels vanish, prior dominates
    u_near, u_far = nuq.u_epi(near), nuq.u_epi(far)
    assert (u_far > u_near).all()
    np.testing.assert_allclose(u_far.numpy(), (y.pow(2).mean() - y.mean() ** 2).item(), rtol=1e-4)
    score = nuq.score(near)
    torch.testing.assert_close(score, 500.0 * u_near + 0.5)
    assert torch.equal(nuq.accept(torch.tensor([0.5, 0.98, 0.99, 1.2])), torch.tensor([True, True, False, False]))


def test_save_load_round_trip(tmp_path, fit_data) -> None:
    x, y = fit_data
    nuq = NUQ(NUQConfig(k=7, bandwidth=3.5, scale=123.0, threshold=0.9, split="coco256_street/train2017")).fit(x, y)
    path = nuq.save(tmp_path / "nuq.safetensors")
    back = NUQ.load(path)
    assert back.config == nuq.config
    torch.testing.assert_close(back.u_epi(x[:20]), nuq.u_epi(x[:20]))
    with pytest.raises(FileNotFoundError, match="fit one"):
        NUQ.load(tmp_path / "missing.safetensors")


def test_bad_inputs_are_clear(fit_data) -> None:
    x, y = fit_data
    with pytest.raises(RuntimeError, match="not fitted"):
        NUQ().u_epi(x)
    with pytest.raises(ValueError, match="no fit points"):
        NUQ().fit(torch.zeros(0, 15), torch.zeros(0))
    with pytest.raises(ValueError, match=r"\[M, 15\]"):
        NUQ().fit(x, y).u_epi(torch.zeros(3, 85))
    with pytest.raises(TypeError, match="unknown option 'bandwith'"):
        NUQ(bandwith=3.0)


def test_refit_and_calibrate(fit_data) -> None:
    x, y = fit_data
    feats, targs = list(x.split(10)), list(y.split(10))
    nuq = fit_nuq(feats, targs, split="clean-val", refit=True, holdout=0.2, quantile=0.8)
    # bandwidth = median distance to the k cosine neighbours (checked against a direct computation)
    fx = nuq.features
    assert fx is not None and fx.shape[0] == 240  # every 5th image held out
    xn = torch.nn.functional.normalize(fx, dim=1)
    sim = xn @ xn.T
    sim.fill_diagonal_(-float("inf"))
    idx = sim.topk(20, dim=1).indices
    h = (fx[idx] - fx[:, None]).norm(dim=-1).median().item()
    assert nuq.config.bandwidth == pytest.approx(h, rel=1e-5)
    # threshold calibration: 80 % of held-out detections are accepted
    held = torch.cat([feats[i] for i in range(4, 30, 5)])
    acc = nuq.accept(nuq.score(held)).float().mean().item()
    assert acc == pytest.approx(0.8, abs=1.5 / held.shape[0] + 1e-6)
    assert nuq.config.split == "clean-val" and nuq.config.info["calibration_quantile"] == 0.8
