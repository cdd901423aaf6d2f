import numpy as np
import pytest

from rlscape.core.directions import Direction, load_direction, normalize, random_direction
from rlscape.core.errors import RlscapeError

# Both sides are float32 norms of ≤ 450 numbers (numpy sums pairwise: error ≤ (log2 n + 1)·u ≈ 6e-7,
# u = 2⁻²⁴) after one float32 rescaling (≤ u): the two agree to well within 1e-5.
_NORM_RTOL = 1e-5


@pytest.fixture
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "conv.weight": rng.normal(size=(6, 3, 5, 5)).astype(np.float32),  # Conv2d: (out, in, kh, kw)
        "fc.weight": rng.normal(size=(4, 10)).astype(np.float32) * np.arange(1, 5, dtype=np.float32)[:, None],
        "fc.bias": rng.normal(size=4).astype(np.float32),
        "log_std": np.full(2, -0.5, np.float32),
    }


def test_filter_normalisation_matches_each_output_unit(weights):
    d = random_direction(weights, seed=0, normalization="filter")
    for name in ("conv.weight", "fc.weight"):
        w, v = weights[name], d.values[name]
        w_rows = np.linalg.norm(w.reshape(w.shape[0], -1), axis=1)
        d_rows = np.linalg.norm(v.reshape(v.shape[0], -1), axis=1)
        np.testing.assert_allclose(d_rows, w_rows, rtol=_NORM_RTOL)  # see _NORM_RTOL
        # per *output* unit, not per input column (defect 2 of the reference code)
        if name == "fc.weight":
            assert not np.allclose(np.linalg.norm(v, axis=0), np.linalg.norm(w, axis=0), rtol=1e-2)
    assert not d.values["fc.bias"].any() and not d.values["log_std"].any()  # bias="ignore"


def test_bias_normalize_and_layer_normalisation(weights):
    d = random_direction(weights, seed=0, normalization="filter", bias="normalize")
    np.testing.assert_allclose(np.linalg.norm(d.values["fc.bias"]), np.linalg.norm(weights["fc.bias"]), rtol=_NORM_RTOL)
    layer = random_direction(weights, seed=0, normalization="layer")
    for name in ("conv.weight", "fc.weight"):
        np.testing.assert_allclose(np.linalg.norm(layer.values[name]), np.linalg.norm(weights[name]), rtol=_NORM_RTOL)
    raw = random_direction(weights, seed=0, normalization="none")
    assert raw.values["fc.bias"].any()


def test_directions_are_seeded_and_distinct(weights):
    a = random_direction(weights, seed=7, index=0)
    b = random_direction(weights, seed=7, index=0)
    c = random_direction(weights, seed=7, index=1)
    for n in weights:
        assert np.array_equal(a.values[n], b.values[n])
    assert not np.array_equal(a.values["fc.weight"], c.values["fc.weight"])


def test_save_load_is_keyed_by_name(tmp_path, weights):
    d = random_direction(weights, seed=1)
    d.save(tmp_path / "dir1.npz")
    with np.load(tmp_path / "dir1.npz") as f:  # readable without rlscape, keyed by parameter name
        assert set(weights) <= set(f.files)
    reordered = dict(reversed(list(weights.items())))
    loaded = load_direction(tmp_path / "dir1.npz", reordered)
    assert list(loaded.values) == list(reordered)
    for n in weights:
        assert np.array_equal(loaded.values[n], d.values[n])
    assert loaded.meta["normalization"] == "filter"


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda v: v.pop("fc.bias"), "missing"),
        (lambda v: v.__setitem__("fc.weight", np.zeros((4, 11), np.float32)), "shape"),
        (lambda v: v.__setitem__("fc.weight", np.full((4, 10), np.nan, np.float32)), "NaN"),
        (lambda v: v.__setitem__("extra.weight", np.zeros(3, np.float32)), "unexpected"),
    ],
)
def test_mismatched_direction_is_refused(tmp_path, weights, mutate, match):
    values = {n: np.ones_like(w) for n, w in weights.items()}
    mutate(values)
    Direction(values, {"kind": "test"}).save(tmp_path / "bad.npz")
    with pytest.raises(RlscapeError, match=match):
        load_direction(tmp_path / "bad.npz", weights)


def test_normalize_rejects_unknown_mode(weights):
    with pytest.raises(RlscapeError, match="normalization"):
        normalize(weights, weights, "rows")
