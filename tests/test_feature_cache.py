"""The real-split feature cache (components/evaluator/features/cache.py): a hit only for the same units and the same
embedder, never a stale or broken entry, and the evaluator's features equal to freshly computed ones."""
import numpy as np
import pytest

from vugan.components.evaluator.features import cache
from vugan.components.evaluator.features.embeddings import Embedder, radiomics_embedder, vu_embedder


def units(seed: int, n: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 16, 16, 3)).astype(np.float32)


def counting(embedder: Embedder) -> tuple[Embedder, list]:
    calls = []

    def fn(images):
        calls.append(len(images))
        return embedder.fn(images)

    import dataclasses

    return dataclasses.replace(embedder, fn=fn), calls


def test_second_call_is_a_hit_with_identical_features_and_no_embedding(tmp_path):
    emb, calls = counting(vu_embedder())
    x = units(0)
    first, status = cache.cached_features(emb, x, tmp_path)
    assert status == "stored" and len(list(tmp_path.glob("vu-*.npy"))) == 1 and sum(calls) == len(x)
    again, status = cache.cached_features(emb, x, tmp_path)
    assert status == "hit" and sum(calls) == len(x)  # nothing embedded the second time
    assert np.array_equal(first, again) and np.array_equal(again, vu_embedder()(x))


def test_one_changed_pixel_or_another_embedder_misses(tmp_path):
    vu, rad = vu_embedder(), radiomics_embedder()
    x = units(1)
    cache.cached_features(vu, x, tmp_path)
    y = x.copy()
    y[3, 5, 5, 1] += 1e-3
    feats, status = cache.cached_features(vu, y, tmp_path)
    assert status == "stored" and np.array_equal(feats, vu(y))
    feats, status = cache.cached_features(rad, x, tmp_path)  # same units, other embedder: its own entry
    assert status == "stored" and np.array_equal(feats, rad(x).astype(np.float32))
    assert len(list(tmp_path.glob("*.npy"))) == 3


def test_broken_or_mismatched_entry_is_recomputed_and_rewritten(tmp_path):
    vu = vu_embedder()
    x = units(2)
    cache.cached_features(vu, x, tmp_path)
    (entry,) = tmp_path.glob("vu-*.npy")
    entry.write_bytes(b"not a numpy file")
    logged = []
    feats, status = cache.cached_features(vu, x, tmp_path, log=logged.append)
    assert status == "stored" and "unreadable" in logged[0] and np.array_equal(feats, vu(x))
    np.save(entry, np.zeros((len(x) - 1, feats.shape[1]), np.float32))  # wrong number of rows
    feats, status = cache.cached_features(vu, x, tmp_path, log=logged.append)
    assert status == "stored" and "recomputing" in logged[1] and np.array_equal(feats, vu(x))
    assert cache.cached_features(vu, x, tmp_path)[1] == "hit"
    assert not list(tmp_path.glob("*.tmp"))  # writes are atomic: no temp file left behind


def test_off_for_a_learned_embedder_or_no_folder(tmp_path):
    learned = Embedder(key="domain", distance_name="FD-domain", kernel_name="KD-domain", description="per run",
                       fn=lambda images: images.reshape(len(images), -1)[:, :4])
    assert cache.cached_features(learned, units(3), tmp_path)[1] == "off"
    assert cache.cached_features(vu_embedder(), units(3), None)[1] == "off"
    assert not list(tmp_path.iterdir())


def test_folder_setting(monkeypatch, tmp_path):
    assert cache.resolve_folder("") is None and cache.resolve_folder("off") is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.resolve_folder("auto") == tmp_path / "vugan" / "features"
    assert cache.resolve_folder("~/x") == cache.Path.home() / "x"


def test_unwritable_folder_evaluates_uncached(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    logged = []
    feats, status = cache.cached_features(vu_embedder(), units(4), blocker / "features", log=logged.append)
    assert status == "off" and "could not write" in logged[0] and feats.shape[0] == 10


@pytest.mark.parametrize("shape", [(4, 8, 8, 2), (4, 8, 8, 3)])
def test_digest_depends_on_shape_and_bytes(shape):
    x = np.zeros(shape, np.float32)
    assert cache.content_digest(x) == cache.content_digest(x.copy())
    assert cache.content_digest(x) != cache.content_digest(x.reshape(shape[0], -1))
    assert cache.content_digest(x) != cache.content_digest(x.astype(np.float64))
