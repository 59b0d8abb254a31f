"""One-pass outputs: shapes, MC only when asked, bitwise-identical under sharding."""
import numpy as np
import torch

from autoal_dist.data.transforms import Normalizer, augment
from autoal_dist.models import build_model
from autoal_dist.models.inference import compute_outputs
from autoal_dist.outputs import PoolOutputs


def setup(n=70, shape=(8, 8, 1), k=4):
    r = np.random.default_rng(0)
    x = r.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    torch.manual_seed(0)
    model = build_model("auto", shape, k, dropout=0.5)
    return x, model, Normalizer.fit(x)


def test_outputs_shapes_and_mc_only_when_needed():
    x, model, norm = setup()
    ids = np.arange(len(x))
    plain = compute_outputs(model, x, ids, norm, batch_size=16)
    assert plain.probs.shape == (70, 4) and plain.embeddings.shape == (70, model.embedding_dim)
    assert plain.mc_probs is None
    np.testing.assert_allclose(plain.probs.sum(1), 1, rtol=1e-5)
    mc = compute_outputs(model, x, ids, norm, needs={"mc_probs"}, batch_size=16, mc_samples=5)
    assert mc.mc_probs.shape == (5, 70, 4)
    assert not np.allclose(mc.mc_probs[0], mc.mc_probs[1])  # dropout masks differ per sample t
    np.testing.assert_array_equal(mc.probs, plain.probs)  # MC reuses the same trunk pass


def test_sharded_pass_is_bitwise_identical():
    x, model, norm = setup(n=100)
    ids, bs = np.arange(100), 16
    full = compute_outputs(model, x, ids, norm, needs={"mc_probs"}, batch_size=bs, seed=7)
    bounds = [0, 32, 48, 100]  # shard boundaries on batch multiples
    parts = [compute_outputs(model, x[lo:hi], ids[lo:hi], norm, needs={"mc_probs"},
                             batch_size=bs, seed=7, first_batch=lo // bs)
             for lo, hi in zip(bounds, bounds[1:])]
    joined = PoolOutputs.concat(parts)
    for key in ("ids", "probs", "embeddings", "mc_probs"):
        assert np.array_equal(getattr(joined, key), getattr(full, key)), key


def test_mc_head_changes_only_the_head():
    _, model, _ = setup()
    e = torch.randn(6, model.embedding_dim)
    g = torch.Generator().manual_seed(1)
    out = model.mc_head(e, 3, g)
    assert out.shape == (3, 6, 4)
    again = model.mc_head(e, 3, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_models_for_each_input_kind():
    for shape, name in (((8, 8, 1), "SmallCNN"), ((32, 32, 3), "ResNet18"),
                        ((64, 64, 3), "ResNet18"), ((20,), "MLP")):
        m = build_model("auto", shape, 7)
        assert type(m).__name__ == name
        x = torch.zeros(2, *((shape[2], shape[0], shape[1]) if len(shape) == 3 else shape))
        e = m.embed(x)
        assert e.shape == (2, m.embedding_dim) and m.head(e).shape == (2, 7)


def test_normalizer_image_chunks_change_no_bit(monkeypatch):
    """Image statistics are sums of integers (exact in float64): any chunking gives the same
    bits, so bounding a chunk's bytes changed no journal; fingerprints hash the same bytes."""
    from autoal_dist.data import base, transforms

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(1000, 12, 12, 3), dtype=np.uint8)
    y = rng.integers(0, 5, 1000)
    whole, fp = Normalizer.fit(x), base.content_fingerprint(x, y)
    monkeypatch.setattr(transforms, "FIT_CHUNK_BYTES", 7 * 12 * 12 * 3 * 8)  # 7-row chunks
    monkeypatch.setattr(base, "FINGERPRINT_CHUNK", 1000)
    chunked = Normalizer.fit(x)
    assert np.array_equal(whole.mean, chunked.mean) and np.array_equal(whole.std, chunked.std)
    assert base.content_fingerprint(x, y) == fp


def test_normalizer_and_augment():
    x = np.random.default_rng(0).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    norm = Normalizer.fit(x)
    t = norm(x)
    assert t.shape == (10, 3, 32, 32)
    assert abs(float(t.mean())) < 1e-3 and abs(float(t.std()) - 1) < 1e-2
    a = augment(t, torch.Generator().manual_seed(0))
    b = augment(t, torch.Generator().manual_seed(0))
    assert a.shape == t.shape and torch.equal(a, b) and not torch.equal(a, t)
