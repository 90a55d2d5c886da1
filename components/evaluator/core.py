"""Evaluation orchestration: real splits + a synthetic set -> metrics.json dict and report sections.

Pure in the house-style sense: arrays and config in, dicts and report sections out; no paths, no CLI. The stages
(utility, embeddings, fidelity, diversity, privacy) run through :class:`StageTimer`, which records seconds and
images of each, so `bench/evaluate.py` and metrics.json report the cost per 1,000 images.

Who is compared with whom (and why), in every feature space:
  * two references: HOLDOUT patients (never seen by the generator; the gate reads this ratio, so copying the
    training data cannot pass for fidelity) and TRAIN patients (where a ratio clearly below 1 flags copying);
  * the real comparator is the other real split; the synthetic units are grouped into pseudo-patients that mirror
    its patients' class lists, so both comparators have the same patients and units per class (FD and KID depend
    on both); patient-bootstrap 95% intervals on every ratio (quality/baselines.py);
  * utility classifiers are tested on the TEST split; TSTR at the real training size is like for like with TRTR;
    the class check (quality/class_check.py) labels the synthetic units with a classifier fitted on TRAIN;
  * feature spaces: the fixed vu-encoder ("FD-VU", the headline and the gate's fidelity rule; never trained on any
    split of this run), Inception when weights are given, and optionally (evaluator.domain_encoder) the
    evaluator-trained "domain" CNN, trained on the TEST split so it never embeds the members it learned from.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

import numpy as np

from vugan.components.evaluator.features import cache as feature_cache
from vugan.components.evaluator.quality import (baselines, class_check, diversity, fd_breakdown, fidelity, radiomics,
                                                 two_sample, utility)
from vugan.components.evaluator.results import Evaluation, FidelityResult, UtilityResult
from vugan.components.evaluator.features.embeddings import (Embedder, domain_embedder, pixel_embedder,
                                                      radiomics_embedder, vu_embedder)
from vugan.components.schema import REGIONS, UnitArrays, unit_region

# Context only: a different (ankylosing spondylitis, T1) dataset, see shared/docs/reference-study.md.
REFERENCE_STUDY = {
    "source": "Sun et al. 2023, PLOS ONE 18(7): e0280316 (ResNet-18, tested on an external study A2209); "
              "a DIFFERENT dataset, shown for context only",
    "trtr": {"balanced_accuracy": 0.893, "macro_auc": 0.97},
    "tstr": {"balanced_accuracy": 0.830, "macro_auc": 0.96},
}


# Spaces the gate's fidelity rule may read, best first: the fixed VU encoder when present, else the domain encoder.
HEADLINE_SPACES = ("vu", "domain")


class StageTimer:
    """Records wall seconds and images processed per named stage."""

    def __init__(self, log: Callable[[str], None] = print):
        self.stages: dict[str, dict] = {}
        self.log = log

    @contextlib.contextmanager
    def stage(self, name: str, images: int):
        self.log(f"evaluate: {name} ({images} images) ...")
        t0 = time.perf_counter()
        yield
        sec = time.perf_counter() - t0
        self.stages[name] = {"seconds": round(sec, 3), "images": int(images),
                             "seconds_per_1000_images": round(1000 * sec / max(images, 1), 3)}


# ----------------------------------------------------------------------------------------------- sampling

def synthetic_class_counts(train_class_ids: np.ndarray, n_classes: int, min_total: int) -> np.ndarray:
    """Units to draw per class: the training prior scaled to max(len(train), min_total) units (largest
    remainder rounding), never fewer per class than the train split has."""
    train_counts = np.bincount(train_class_ids, minlength=n_classes)
    total = max(int(train_counts.sum()), min_total)
    if train_counts.sum() == 0:
        raise ValueError("the real train split is empty: nothing to take the class prior from")
    exact = train_counts / train_counts.sum() * total
    counts = np.floor(exact).astype(int)
    remainder = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    return np.maximum(counts, train_counts)


def draw_synthetic(generate_fn: Callable[[np.ndarray, int], np.ndarray], train: UnitArrays,
                   class_names: tuple[str, ...], min_total: int, seed: int) -> UnitArrays:
    """Generate the evaluation's synthetic set: ``generate_fn(class_ids, seed) -> images`` (e.g. bundle.generate)."""
    counts = synthetic_class_counts(train.class_ids, len(class_names), min_total)
    class_ids = np.repeat(np.arange(len(class_names), dtype=np.int32), counts)
    images = np.asarray(generate_fn(class_ids, seed), np.float32)
    names = np.array([class_names[c] for c in class_ids], object)
    return UnitArrays(images=images, class_ids=class_ids, regions=np.array([region_of_class(n) for n in names], object),
                      level_names=names, patients=np.array([f"synthetic-{i}" for i in range(len(class_ids))], object))


def region_of_class(name: str) -> str:
    return name if name in REGIONS else unit_region(name)


def region_ids(units: UnitArrays) -> np.ndarray:
    return np.array([REGIONS.index(r) for r in units.regions], np.int32)


def matched_subsample(labels: np.ndarray, target_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``labels`` with, per class, as many units as ``target_labels`` has (fewer if not available)."""
    out = []
    for c in np.unique(target_labels):
        idx = np.flatnonzero(labels == c)
        out.append(rng.permutation(idx)[:int((target_labels == c).sum())])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, int)


# ----------------------------------------------------------------------------------------------- fidelity

def _ratio(value, baseline):
    return None if value is None or baseline is None or baseline <= 0 else value / baseline


def _fd_kid(ref, other, block: int, seed: int) -> tuple[float | None, float | None, float | None]:
    if len(ref) < 2 or len(other) < 2:
        return None, None, None
    fd = fidelity.frechet_distance(ref, other)
    kid, kid_std = fidelity.kernel_distance(ref, other, max_block_size=block, seed=seed)
    return fd, kid, kid_std


def fair_selection(labels: dict[str, np.ndarray], groups: dict[str, np.ndarray], seed: int) -> dict:
    """Which units each comparison uses, decided from classes and patients alone (so every feature space compares
    exactly the same units, and only those need embedding).

    Returns:
      {"train": {...}, "holdout": {...}}, keyed by the REFERENCE split; each holds "real" (indices into the other
      real split), "synthetic" (indices into the synthetic set) and "synthetic_groups" (their (pseudo-)patients).
    """
    out = {}
    for ref, other in (("train", "holdout"), ("holdout", "train")):
        real = baselines.Side(np.arange(len(labels[other]))[:, None], np.asarray(labels[other]),
                              np.asarray(groups[other]).astype(str))
        syn = baselines.Side(np.arange(len(labels["synthetic"]))[:, None], np.asarray(labels["synthetic"]),
                             np.asarray(groups["synthetic"]).astype(str))
        real_eq, syn_eq = baselines.equal_sides(real, syn, np.random.default_rng([seed, len(out)]))
        out[ref] = {"real": real_eq.feats[:, 0], "synthetic": syn_eq.feats[:, 0], "synthetic_groups": syn_eq.groups}
    return out


def comparator_used(real: baselines.Side, kept: np.ndarray) -> dict:
    """How much of the real comparator a fair comparison used: patients the synthetic set could not mirror (too
    few units of one of their classes) are left out of it, and this says how many, so none is dropped silently."""
    kept_groups = np.unique(real.groups[np.asarray(kept, int)]) if len(kept) else np.zeros(0, str)
    all_groups = np.unique(real.groups)
    return {"real_units_available": int(len(real)), "real_units_compared": int(len(kept)),
            "real_patients_available": int(len(all_groups)), "real_patients_compared": int(len(kept_groups)),
            "real_patients_left_out": int(len(all_groups) - len(kept_groups))}


def synthetic_units_used(selection: dict) -> np.ndarray:
    return np.unique(np.concatenate([v["synthetic"] for v in selection.values()]))


def compare_fairly(ref: baselines.Side, real: baselines.Side, syn: baselines.Side, class_names: tuple[str, ...],
                   cfg, seed: int, naming: fd_breakdown.FeatureNaming | None = None) -> dict:
    """Synthetic vs ``ref`` beside real vs ``ref`` (both comparators already cut to equal patients and units per
    class, fair_selection), patient-bootstrap 95% intervals on every FD ratio, KID read as a ratio or a
    difference (baselines.kid_reading), overall and per class, and PRDC overall. With ``naming``, each synthetic
    FD also gets its per-feature breakdown ("fd_breakdown", quality/fd_breakdown.py)."""
    present = [c for c in range(len(class_names)) if (real.labels == c).sum() >= 2 and (syn.labels == c).sum() >= 2
               and (ref.labels == c).sum() >= 2]
    boot = baselines.bootstrap_ratios(ref, real, syn, fidelity.frechet_distance_np, present,
                                      cfg.fidelity_bootstrap, np.random.default_rng(seed + 1))

    def one(c: int | None) -> dict:
        m_ref, m_real, m_syn = ((x.labels == c) if c is not None else np.ones(len(x), bool) for x in (ref, real, syn))
        fd_s, kid_s, kid_s_std = _fd_kid(ref.feats[m_ref], syn.feats[m_syn], cfg.kid_block_size, seed)
        fd_b, kid_b, kid_b_std = _fd_kid(ref.feats[m_ref], real.feats[m_real], cfg.kid_block_size, seed)
        pairs, ratio = boot.get(c, np.zeros((0, 2))), _ratio(fd_s, fd_b)
        breakdown = {} if naming is None or fd_s is None else {"fd_breakdown": fd_breakdown.summary(
            fd_breakdown.frechet_parts(ref.feats[m_ref], syn.feats[m_syn]), naming)}
        return {"fd": fd_s, "fd_baseline": fd_b, "fd_ratio": ratio,
                "fd_ratio_ci": baselines.ratio_interval(pairs, ratio), "bootstrap_resamples": int(len(pairs)),
                "kid": kid_s, "kid_std": kid_s_std, "kid_baseline": kid_b, "kid_baseline_std": kid_b_std,
                **baselines.kid_reading(kid_s, kid_s_std, kid_b, kid_b_std),
                "n": {"reference": int(m_ref.sum()), "real": int(m_real.sum()), "synthetic": int(m_syn.sum()),
                      "reference_patients": len(np.unique(ref.groups[m_ref])),
                      "real_patients": len(np.unique(real.groups[m_real])),
                      "synthetic_patients": len(np.unique(syn.groups[m_syn]))}, **breakdown}

    overall = one(None)
    k = cfg.prdc_k
    if len(ref) > k and len(syn) > k and len(real) > k:
        overall["prdc"] = fidelity.prdc(ref.feats, syn.feats, k=k, block=cfg.nn_block_size)
        overall["prdc_baseline"] = fidelity.prdc(ref.feats, real.feats, k=k, block=cfg.nn_block_size)
    else:
        overall["prdc"] = overall["prdc_baseline"] = None
    empty = {"fd": None, "fd_baseline": None, "fd_ratio": None, "fd_ratio_ci": None, "kid": None, "kid_std": None,
             "kid_baseline": None, "kid_ratio": None, "kid_difference": None, "kid_difference_se": None}
    per_class = {name: one(c) if c in present else {**empty, "n": {"synthetic": int((syn.labels == c).sum())}}
                 for c, name in enumerate(class_names)}
    return {"overall": overall, "per_class": per_class}


def copying_flag(against_train: dict) -> dict:
    """Possible copying: synthetic units CLEARLY closer to the training patients than new real patients are (the
    95% interval of the ratio against train lies below 1). A generator that reproduces its training data scores
    below 1 there, which a plain 'lower is better' reading would call excellent."""
    ci = against_train.get("fd_ratio_ci")
    flagged = bool(ci is not None and ci[1] < 1.0)
    return {"flagged": flagged, "fd_ratio": against_train.get("fd_ratio"), "fd_ratio_ci": ci,
            "rule": "flagged when the 95% interval of the FD ratio against TRAIN lies entirely below 1"}


def whitened_on_train(emb: Embedder, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sets of one comparison as the embedder's distances need them: as they are, or (whiten_on_train, FRD)
    all whitened with one transform, the real TRAIN split's (radiomics.whitening)."""
    if not emb.whiten_on_train:
        return feats
    mean, matrix = radiomics.whitening(feats["train"])
    return {k: (v - mean) @ matrix for k, v in feats.items()}


def fidelity_in_space(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray], groups: dict[str, np.ndarray],
                      class_names: tuple[str, ...], cfg, seed: int, selection: dict | None = None,
                      synthetic_rows: np.ndarray | None = None,
                      naming: fd_breakdown.FeatureNaming = fd_breakdown.FeatureNaming()) -> dict:
    """Fair FD, KID and PRDC of the synthetic set in one feature space, against two references:

      * TRAIN (what the generator learned from): real comparator = HOLDOUT patients;
      * HOLDOUT (patients the generator never saw; copying its training data cannot score better than new
        patients here): real comparator = TRAIN patients.
    Both comparators are cut to equal patients and units per class (fair_selection).

    Args:
      feats / labels / groups: "train", "holdout", "synthetic" -> features [n, D] / class ids [n] / patient ids
        [n] (synthetic draws: one id each; real units scored as if synthetic: their patients).
      selection: fair_selection(labels, groups, seed) (computed when None).
      synthetic_rows: the synthetic units whose features feats["synthetic"] holds (all when None), so that only
        the units compared need embedding.
      naming: the space's feature names and groups for the per-feature breakdown of the FD against HOLDOUT (the
        reference the gate reads), overall and per class ("fd_breakdown"; default: features by index).
    Returns:
      {"overall", "per_class"} against train, "against_holdout" {"overall", "per_class"}, and "copying".
    """
    selection = selection or fair_selection(labels, groups, seed)
    rows = np.arange(len(labels["synthetic"])) if synthetic_rows is None else np.asarray(synthetic_rows)
    real = {k: baselines.Side(np.asarray(feats[k]), np.asarray(labels[k]), np.asarray(groups[k]).astype(str))
            for k in ("train", "holdout")}
    out = {}
    for ref, other in (("train", "holdout"), ("holdout", "train")):
        sel = selection[ref]
        at = np.searchsorted(rows, sel["synthetic"])
        syn = baselines.Side(np.asarray(feats["synthetic"])[at], np.asarray(labels["synthetic"])[sel["synthetic"]],
                             np.asarray(sel["synthetic_groups"]).astype(str))
        out[ref] = {**compare_fairly(real[ref], real[other].take(sel["real"]), syn, class_names, cfg, seed,
                                     naming if ref == "holdout" else None),
                    "comparator": comparator_used(real[other], sel["real"])}
    return {**out["train"], "against_holdout": out["holdout"], "copying": copying_flag(out["train"]["overall"])}


def two_sample_in_space(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray], groups: dict[str, np.ndarray],
                        synthetic_rows: np.ndarray, class_names: tuple[str, ...], seed: int) -> dict:
    """The C2ST (quality/two_sample.py) of the compared synthetic units against every real reference unit (train and
    holdout patients together: the larger the reference, the narrower the interval; copying training patients is
    the privacy gate's finding, with zero tolerance, not a fidelity question).

    The synthetic units are grouped by content into as many groups as they would fill real patients (units per
    real patient), so that several units of one source (real units scored as if synthetic, a generator repeating
    itself) never sit on both sides of a fold: on the 58-patient cohort fresh real patients scored AUC 0.755 with
    one group per unit and 0.488 grouped by content; every degradation stayed >= 0.93 (docs/evaluation.md)."""
    real = np.concatenate([feats["train"], feats["holdout"]])
    real_labels = np.r_[labels["train"], labels["holdout"]]
    real_groups = np.r_[np.asarray(groups["train"]).astype(str), np.asarray(groups["holdout"]).astype(str)]
    syn_labels = np.asarray(labels["synthetic"])[np.asarray(synthetic_rows, int)]
    per_patient = len(real_labels) / max(len(np.unique(real_groups)), 1)
    out = two_sample.per_class_c2st(real, real_labels, real_groups, feats["synthetic"], syn_labels, None,
                                    class_names, seed, per_patient)
    return {"space": "vu", "reference": "train and holdout patients", **out,
            "synthetic_grouping": f"k-means on the features within each comparison, one group per "
                                  f"{per_patient:.1f} units (the real units per patient)"}


def pixel_swd(units: dict[str, np.ndarray], labels: dict[str, np.ndarray], class_names, sub, cfg, seed) -> dict:
    """Sliced Wasserstein distance in pixel space, synthetic vs train beside holdout vs train."""
    tr, ho, sy = units["train"], units["holdout"], units["synthetic"][sub]
    ltr, lho, lsy = labels["train"], labels["holdout"], labels["synthetic"][sub]

    def compare(mt, mh, ms):
        if mt.sum() < 2 or mh.sum() < 2 or ms.sum() < 2:
            return {"swd": None, "swd_baseline": None, "swd_ratio": None}
        s = fidelity.sliced_wasserstein(tr[mt], sy[ms], cfg.swd_projections, seed)
        b = fidelity.sliced_wasserstein(tr[mt], ho[mh], cfg.swd_projections, seed)
        return {"swd": s, "swd_baseline": b, "swd_ratio": _ratio(s, b)}

    out = {"overall": compare(np.ones(len(tr), bool), np.ones(len(ho), bool), np.ones(len(sy), bool))}
    out["per_class"] = {name: compare(ltr == c, lho == c, lsy == c) for c, name in enumerate(class_names)}
    return out


# ----------------------------------------------------------------------------------------------- entry point

@dataclasses.dataclass
class EvaluationOutcome:
    evaluation: Evaluation  # fidelity, diversity and utility (privacy is judged on the release candidate later)
    domain: Embedder | None  # the domain encoder (trained on TEST), reusable by the privacy evaluator; None if off
    synthetic: UnitArrays

    @property
    def metrics(self) -> dict:
        """The evaluation as the dict metrics.json holds (before the JSON sanitiser), for callers that print it."""
        return self.evaluation.to_dict()


def evaluate_units(train: UnitArrays, holdout: UnitArrays, test: UnitArrays, synthetic: UnitArrays,
                   class_names: tuple[str, ...], cfg, inception: Embedder | None = None,
                   inception_skip_reason: str = "", timer: StageTimer | None = None,
                   vu: Embedder | None = None) -> EvaluationOutcome:
    """Fidelity, diversity and utility of ``synthetic`` against the real splits.

    Args:
      cfg: EvaluatorConfig. inception: an Embedder, or None with ``inception_skip_reason`` saying why.
      vu: the headline embedder; None loads the shipped vu-encoder (its sha256 checked against its card).
    """
    timer = timer or StageTimer()
    vu = vu or vu_embedder()  # batches of 64: fastest in numpy here, and the result never depends on the batch
    seed = cfg.seed
    settings = utility.ClassifierSettings.from_config(cfg)

    # Utility first: the TRTR classifier is also the domain encoder when the classes are the regions.
    with timer.stage("utility_classifiers", len(train) + len(synthetic) + 2 * len(test)):
        trtr = utility.train_classifier(train.images, region_ids(train), len(REGIONS), settings, seed,
                                        groups=train.patients.astype(str))
        tstr = utility.train_classifier(synthetic.images, region_ids(synthetic), len(REGIONS), settings, seed)
        y_test = region_ids(test)
        trtr_scores = {**utility.classification_scores(y_test, trtr.predict(test.images), REGIONS), **_selection(trtr)}
        tstr_scores = {**utility.classification_scores(y_test, tstr.predict(test.images), REGIONS), **_selection(tstr)}
        curve = tstr_learning_curve(train, synthetic, test, cfg.tstr_size_multiples, settings, seed)
        equal = next((p for p in curve if p["multiple"] == 1.0 and p.get("scores")), None)
        util = UtilityResult(
            target="region", classes=list(REGIONS), trtr=trtr_scores, tstr=tstr_scores,
            model_selection="best validation balanced accuracy on a slice of the TRAINING source "
                            "(patient-disjoint for real data); the test split is used once, for the scores",
            reference_study=REFERENCE_STUDY, tstr_balanced_accuracy=tstr_scores["balanced_accuracy"],
            trtr_balanced_accuracy=trtr_scores["balanced_accuracy"], learning_curve=curve,
            tstr_equal_size=equal and {**equal["scores"], "train_units": equal["units"]},
            tstr_equal_size_balanced_accuracy=equal and equal["scores"]["balanced_accuracy"],
            # The README's headline check, on the classes themselves (levels or regions), by a classifier that is
            # not the GAN's own auxiliary head; classes the synthetic set lacks (prior 0) are left out.
            class_check=class_check.class_check(train, test, synthetic, class_names))
    # Optional second opinion, trained on the TEST split: it never embeds units it was trained on.
    domain = privacy_encoder(test, class_names, cfg, timer, stage="domain_encoder") if cfg.domain_encoder else None

    sets = {"train": train, "holdout": holdout, "synthetic": synthetic}
    labels = {k: v.class_ids for k, v in sets.items()}
    groups = {k: v.patients for k, v in sets.items()}
    sub = matched_subsample(synthetic.class_ids, holdout.class_ids, np.random.default_rng(seed))
    selection = fair_selection(labels, groups, seed)
    used = synthetic_units_used(selection)  # only the synthetic units compared are embedded
    embedders = [e for e in (vu, inception, domain, radiomics_embedder(cfg.batch_size)) if e is not None]
    spaces: dict = {}
    skipped = {} if inception is not None else {
        "inception": inception_skip_reason or "no Inception weights configured"}
    cache_folder = feature_cache.resolve_folder(cfg.feature_cache)
    # Each real split hashed once for all embedders (a few hundred MB at release scale).
    digests = {} if cache_folder is None else {"train": feature_cache.content_digest(train.images),
                                               "holdout": feature_cache.content_digest(holdout.images)}
    c2st = None  # the C2ST in the fixed vu space (the gate's fidelity effect size)
    for emb in embedders:
        n = len(train) + len(holdout) + len(used)
        with timer.stage(f"embed_{emb.key}", n):
            (f_train, s_train), (f_hold, s_hold) = (
                feature_cache.cached_features(emb, split.images, cache_folder, timer.log, digests.get(name))
                for name, split in (("train", train), ("holdout", holdout)))
            feats = whitened_on_train(emb, {"train": f_train, "holdout": f_hold,
                                            "synthetic": emb(synthetic.images[used])})
        timer.stages[f"embed_{emb.key}"]["real_feature_cache"] = {"train": s_train, "holdout": s_hold}
        with timer.stage(f"fidelity_{emb.key}", n):
            spaces[emb.key] = {
                "distance_name": emb.distance_name, "kernel_name": emb.kernel_name,
                "description": emb.description, "provenance": emb.provenance,
                **fidelity_in_space(feats, labels, groups, class_names, cfg, seed, selection, used,
                                    fd_breakdown.FeatureNaming(emb.feature_names, emb.feature_groups))}
        if emb.key == "vu":
            with timer.stage("two_sample_vu", n):
                c2st = two_sample_in_space(feats, labels, groups, used, class_names, seed)
    with timer.stage("swd_pixel", len(train) + len(holdout) + len(sub)):
        pixel = {"description": pixel_embedder().description,
                 **pixel_swd({k: v.images for k, v in sets.items()}, labels, class_names, sub, cfg, seed)}
    headline = next(k for k in HEADLINE_SPACES if k in spaces)
    head = spaces[headline]["against_holdout"]["overall"]
    frd = spaces["radiomics"]["against_holdout"]["overall"]
    # The release gate reads fid_ratio (privacy/spec.py: fid_ratio_key): the fair ratio against HOLDOUT patients
    # in the headline space, so copying the training data cannot pass for fidelity.
    fid = FidelityResult(
        embeddings=spaces, skipped=skipped, pixel=pixel, fid_ratio=head["fd_ratio"], fid_ratio_ci=head["fd_ratio_ci"],
        fid_ratio_embedding=headline, fid_ratio_reference="holdout",
        fid_ratio_against_train=spaces[headline]["overall"]["fd_ratio"],
        fid_ratio_against_train_ci=spaces[headline]["overall"]["fd_ratio_ci"],
        possible_copying=spaces[headline]["copying"]["flagged"],
        fid_ratio_encoder={k: vu.provenance.get(k) for k in ("name", "version", "sha256")},
        frd_ratio=frd["fd_ratio"], frd_ratio_ci=frd["fd_ratio_ci"],
        comparison="each ratio = distance(synthetic, reference) / distance(real patients, reference), against two "
                   "references: TRAIN (real comparator: holdout patients) and HOLDOUT (real comparator: train "
                   "patients); synthetic units grouped into pseudo-patients mirroring the real comparator's "
                   "patients, so both comparators have the same patients and units per class; 95% intervals from "
                   "a patient bootstrap",
        two_sample=c2st)

    with timer.stage("ms_ssim", 2 * cfg.msssim_pairs * len(class_names) * 2):
        div = diversity.diversity_report(
            train.images, train.class_ids, synthetic.images, synthetic.class_ids, tuple(class_names),
            diversity.MsSsimSettings(cfg.msssim_scales, cfg.msssim_filter_size, cfg.msssim_pairs),
            cfg.mode_collapse_margin, seed, real_patients=train.patients)

    evaluation = Evaluation(
        counts={"train": len(train), "holdout": len(holdout), "test": len(test), "synthetic": len(synthetic),
                "synthetic_matched_subsample": int(len(sub)),
                "synthetic_per_class": {n: int((synthetic.class_ids == c).sum()) for c, n in enumerate(class_names)}},
        class_names=list(class_names), synthetic={"seed": seed, "class_prior": "the real train split's"},
        fidelity=fid, diversity=div, utility=util)
    return EvaluationOutcome(evaluation=evaluation, domain=domain, synthetic=synthetic)


def tstr_learning_curve(train: UnitArrays, synthetic: UnitArrays, test: UnitArrays, multiples, settings,
                        seed: int) -> list[dict]:
    """TSTR on class-stratified synthetic subsets of ``multiples`` x the real training size (the real split's class
    counts scaled), so TSTR at 1x is like for like with TRTR: same units per class, same validation share; at
    larger sizes the gain from quantity alone shows. Each point: multiple, units, scores (or why it is missing)."""
    train_counts = np.bincount(region_ids(train), minlength=len(REGIONS))
    syn_regions = region_ids(synthetic)
    y_test = region_ids(test)
    rng = np.random.default_rng(seed)
    points = []
    for m in multiples:
        need = np.round(train_counts * float(m)).astype(int)
        have = np.bincount(syn_regions, minlength=len(REGIONS))
        if (need > have).any():
            points.append({"multiple": float(m), "units": int(need.sum()), "scores": None,
                           "missing": f"needs {int(need.sum())} synthetic units with the training class counts x "
                                      f"{m:g}; {len(synthetic)} were drawn (evaluator.min_synthetic)"})
            continue
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(syn_regions == r))[:k]
                                      for r, k in enumerate(need) if k]))
        clf = utility.train_classifier(synthetic.images[idx], syn_regions[idx], len(REGIONS), settings, seed)
        points.append({"multiple": float(m), "units": int(len(idx)),
                       "scores": {**utility.classification_scores(y_test, clf.predict(test.images), REGIONS),
                                  **_selection(clf)}})
    return points


def _selection(clf: utility.TrainedClassifier) -> dict:
    return {"best_epoch": clf.best_epoch, "val_balanced_accuracy": clf.val_balanced_accuracy,
            "train_units": clf.train_size, "val_units": clf.val_size}


def attack_encoder(outcome: EvaluationOutcome, test: UnitArrays, class_names: tuple[str, ...], cfg,
                   timer: StageTimer | None = None) -> Embedder:
    """The encoder of the embedding-space attacks: the evaluation's domain encoder when it was trained (it is
    trained on the TEST split, exactly as the attacks need), else one trained now (privacy_encoder)."""
    return outcome.domain if outcome.domain is not None else privacy_encoder(test, class_names, cfg, timer)


def privacy_encoder(test: UnitArrays, class_names: tuple[str, ...], cfg, timer: StageTimer | None = None,
                    stage: str = "privacy_encoder") -> Embedder:
    """The encoder of the embedding-space attacks: trained on the TEST split, patients that are neither members,
    nor candidates, nor the DOMIAS reference, so it never saw the members it is used to find (the TRTR classifier,
    trained on the members themselves, would embed them better than anyone else and bias the attacks)."""
    settings = utility.ClassifierSettings.from_config(cfg)
    timer = timer or StageTimer()
    with timer.stage(stage, len(test)):
        clf = utility.train_classifier(test.images, test.class_ids, len(class_names), settings, cfg.seed,
                                       groups=test.patients.astype(str))
    return domain_embedder(clf, batch_size=cfg.batch_size, trained_on="real TEST split (never the members)")
