"""Helpers (no tests) for the export/synthesize/pipeline tests: a tiny real Model artifact and an Evaluation
artifact, written with the same functions the trainer and the evaluator use (``models.acgan``, ``write_artifact``),
plus a runner for fresh Python processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ("cervical", "thoracic", "lumbar")
IMAGE_SHAPE = (16, 16, 3)
NOISE_DIM = 100
BIN = Path(sys.executable).parent  # the venv's console scripts: vugan, saved_model_cli


def make_model_artifact(out_dir: Path, ema: bool = True, seed: int = 0) -> Path:
    """A real, untrained ac-GAN (16x16x3, 3 classes) saved as the trainer's Model artifact."""
    import keras

    from vugan.models.acgan import ArchConfig, build_discriminator, build_generator
    from vugan.pipeline.artifacts import ArtifactType, write_artifact

    keras.utils.set_random_seed(seed)
    arch = ArchConfig(image_shape=IMAGE_SHAPE, num_classes=len(CLASS_NAMES), noise_dim=NOISE_DIM, width=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = build_generator(arch)
    gen.save(out_dir / "generator.keras")
    if ema:
        # A distinguishable EMA copy: the same net with other weights, so tests can tell which one was used.
        keras.utils.set_random_seed(seed + 1)
        build_generator(arch).save(out_dir / "generator_ema.keras")
    build_discriminator(arch).save(out_dir / "discriminator.keras")
    info = {"class_names": list(CLASS_NAMES), "image_shape": list(IMAGE_SHAPE), "noise_dim": NOISE_DIM,
            "conditioning": "region", "steps": 0, "ema": ema}
    (out_dir / "model_info.json").write_text(json.dumps(info))
    write_artifact(out_dir, artifact_type=ArtifactType.MODEL, producer="train", config_fingerprint="test",
                   properties={"class_names": list(CLASS_NAMES), "image_shape": list(IMAGE_SHAPE)})
    return out_dir


def make_evaluation_artifact(out_dir: Path, passed: bool, reasons=(), metrics: dict | str | None = None,
                             model_dir: Path | None = None, config=None, dropped=()) -> Path:
    """An Evaluation artifact with a given verdict. With ``model_dir``, the release candidate is staged exactly as
    the evaluator stages it (components/synthesize/release/, ``config.synthesize``) and the chain is recorded."""
    from vugan.pipeline.artifacts import ArtifactType, read_artifact, write_artifact

    out_dir.mkdir(parents=True, exist_ok=True)
    verdict = {"passed": passed, "reasons": list(reasons), "forced": False}
    if model_dir is not None:
        from vugan.components.synthesize import release as syn
        from vugan.models.bundle import generate, load_model_bundle

        scfg = config.synthesize
        bundle = load_model_bundle(model_dir, ema=scfg.use_ema)
        syn.stage_candidate(lambda ids, seed: generate(bundle, ids, seed), bundle.class_names, "region", scfg,
                            out_dir / syn.CANDIDATE, log=lambda m: None)
        syn.write_filter(out_dir / syn.CANDIDATE, scfg.release_filter, dropped, "test")
        verdict["release"] = {**syn.release_spec(read_artifact(model_dir)["fingerprint"],
                                                 syn.generator_variant(scfg.use_ema, bundle.info), scfg.seed,
                                                 scfg.units_per_class, scfg.release_filter),
                              "candidate_sha256": syn.candidate_digest(out_dir / syn.CANDIDATE)}
    (out_dir / "verdict.json").write_text(json.dumps(verdict))
    if isinstance(metrics, str):
        (out_dir / "metrics.json").write_text(metrics)  # deliberately malformed content
    elif metrics is not None:
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
    write_artifact(out_dir, artifact_type=ArtifactType.EVALUATION, producer="evaluate", config_fingerprint="test")
    return out_dir


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (nothing from this test process, such as Keras objects, is there)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(ROOT))


def vugan(*args: str, timeout: float = 900, cwd: Path | None = None,
          env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed ``vugan`` command, as a user runs it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([str(BIN / "vugan"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(cwd or ROOT))


def last_json(stdout: str, tag: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(tag + " ")]
    assert lines, f"no {tag} line in output:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len(tag) + 1:])


# ------------------------------------------------------------------------------------------------ the tiny run

_TINY: dict[str, object] = {}

# The tiny run is a sponsor's run: identifiers that look like a hospital's, a salt from the environment. The
# identity test (test_run_identity.py) searches every output of it for these.
TINY_SALT = "tiny-run-salt-5f0e2b9c71d4"


def sponsor_ids(index: int, sequence: str) -> tuple[str, str]:
    """(patient_id, scan_id) a hospital might use for phantom patient ``index``."""
    return f"MRN-{731000 + index}-KLINIKUM", f"ACC-{2024000 + 2 * index + (sequence == 'T2')}-SPINE"


def tiny_run(base: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """One end-to-end ``vugan run`` of configs/tiny.toml per test session (phantom cohort first), shared by the
    pipeline, gate and notebook tests through copies (:func:`copy_run`); later calls return the same run."""
    if "run" not in _TINY:
        import csv

        base.mkdir(parents=True, exist_ok=True)
        phantom = vugan("phantom", "--config", "configs/tiny.toml", "--out", str(base / "phantom"))
        assert phantom.returncode == 0, phantom.stderr[-3000:]
        # The phantom's manifest with hospital-like identifiers (absolute paths to the same volumes).
        rows = list(csv.DictReader(open(base / "phantom" / "scans.csv")))
        manifest = base / "sponsor-phantom" / "scans.csv"
        manifest.parent.mkdir()
        with open(manifest, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                index = int(r["patient_id"].split("-")[1]) - 1
                r["patient_id"], r["scan_id"] = sponsor_ids(index, r["sequence"])
                for col in ("image", "vertebra_mask", "centroids"):
                    if r.get(col):
                        r[col] = str((base / "phantom" / r[col]).resolve())
                w.writerow(r)
        # --force-release: two training steps cannot pass the gate; the datasheet records the override.
        proc = vugan("run", "--config", "configs/tiny.toml", "--manifest", str(manifest),
                     "--runs-dir", str(base / "runs"), "--force-release", env={"VUGAN_SALT": TINY_SALT})
        assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
        _TINY["run"] = (base / "runs" / "00001-tiny", proc)
    return _TINY["run"]  # type: ignore[return-value]


def copy_run(run_dir: Path, dest: Path) -> Path:
    import shutil

    target = dest / run_dir.name
    shutil.copytree(run_dir, target)
    return target
