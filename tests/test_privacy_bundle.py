"""Model attacks against the project's real ac-GAN architecture (models/acgan.py, untrained, tiny) via the bundle
contract: the reconstruction attack really optimises z, the white-box scores agree with models.bundle.discriminate,
and evaluate_privacy runs end to end with a real bundle."""
import numpy as np
import pytest

from vugan.components.evaluator.privacy.model_attacks import discriminator_scores, reconstruction_errors
from vugan.components.evaluator.privacy.attacks import evaluate_privacy
from support.privacy_controls import blob_cohort, take
from vugan.components.evaluator.privacy.spec import PrivacyConfig


@pytest.fixture(scope="module")
def bundle():
    import keras

    from vugan.models.acgan import ArchConfig, build_discriminator, build_generator
    from vugan.models.bundle import ModelBundle

    keras.utils.set_random_seed(0)
    arch = ArchConfig(image_shape=(16, 16, 3), num_classes=3, noise_dim=8, width=8)
    return ModelBundle(build_generator(arch), build_discriminator(arch), ("cervical", "thoracic", "lumbar"),
                       (16, 16, 3), 8, {})


def test_reconstruction_optimises_the_latent(bundle):
    x = blob_cohort(4, 2, seed=3).images
    c = np.zeros(len(x), np.int32)
    kw = dict(restarts=1, lr=0.1, batch=8, class_mode="query", seed=0)
    start, _ = reconstruction_errors(bundle.generator, 8, 3, x, c, steps=1, **kw)
    end, sec = reconstruction_errors(bundle.generator, 8, 3, x, c, steps=60, **kw)
    assert np.all(end < start) and sec > 0
    best, _ = reconstruction_errors(bundle.generator, 8, 3, x, c, steps=60, **{**kw, "class_mode": "best"})
    assert best.shape == (8,) and np.all(np.isfinite(best))


def test_whitebox_scores_follow_the_bundle_contract(bundle):
    from vugan.models.bundle import discriminate

    x = blob_cohort(3, 3, seed=4).images
    c = np.array([0, 1, 2] * 3, np.int32)
    logit, conf, _ = discriminator_scores(bundle.discriminator, x, c, batch=4)
    rf, cls = discriminate(bundle, x)
    np.testing.assert_allclose(logit, rf, rtol=1e-5, atol=1e-6)
    p = np.exp(cls - cls.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(conf, p[np.arange(9), c], rtol=1e-5)


def test_evaluate_privacy_with_a_real_bundle_and_no_embedding(bundle):
    from vugan.models.bundle import generate

    cohort = blob_cohort(24, 3, seed=5)
    pid = np.array([int(p[1:]) for p in cohort.patients])
    members, nonmembers = take(cohort, np.nonzero(pid < 12)[0]), take(cohort, np.nonzero(pid >= 12)[0])
    syn_images = generate(bundle, np.arange(60) % 3, seed=0)
    synthetic = take(cohort, np.arange(60))
    synthetic = type(synthetic)(syn_images, synthetic.class_ids, synthetic.regions, synthetic.level_names,
                                np.array([f"s{i}" for i in range(60)], object))
    cfg = PrivacyConfig(bootstrap=50, pbb_steps=10, pbb_restarts=1, pbb_max_patients=4, ct_cells=2, ct_min_cell=5,
                        patient_aggregate="max")
    m = evaluate_privacy(members, nonmembers, synthetic, bundle, None, cfg, seed=0).metrics
    assert set(m["attacks"]) == {"pixel.fbb_nearest", "pixel.ref_pairwise", "pixel.ref_density", "pixel.domias",
                                 "invariant.fbb_nearest",
                                 "pbb_reconstruction", "logan_realfake", "logan_aux_confidence"}
    assert m["skipped"] == {"embedding space": "no encoder given"}
    # 12 held-out patients: 4 are the DOMIAS reference, 8 are candidates; all 12 member patients are attacked.
    assert m["candidates"] == {**m["candidates"], "member_patients": 12, "nonmember_patients": 8,
                               "reference_patients": 4}
    assert m["attacks"]["pbb_reconstruction"]["patient"]["n_members"] == 4  # whole patients, capped
    assert m["attacks"]["pbb_reconstruction"]["unit"]["n_members"] == 12  # 4 patients x 3 units
    assert m["attacks"]["logan_realfake"]["patient"]["n_members"] == 12
    # Model attacks are the worst case, outside the gate's family of tests.
    assert not m["attacks"]["logan_realfake"]["gated"] and m["attacks"]["pixel.domias"]["gated"]
    assert m["strongest"]["model_worst_case"]["attack"] in ("pbb_reconstruction", "logan_realfake",
                                                            "logan_aux_confidence")
    assert m["patient_aggregate"] == "max" and m["attacks"]["logan_realfake"]["aggregate"] == "max"
