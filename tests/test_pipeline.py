"""The sequential pipeline on configs/tiny.toml: one real `vugan run` per session, then reruns, plans and the
release gate on copies of that run folder."""
from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from support.pipeline_runs import copy_run, vugan

# slow tier: the tiny end-to-end `vugan run` (minutes), then more vugan processes on copies of it
pytestmark = pytest.mark.slow

ORDER = ["preprocess", "train", "evaluate", "synthesize", "export"]


def _states(run_dir):
    return {n: e["state"] for n, e in json.loads((run_dir / "run.json").read_text())["components"].items()}


def test_run_layout_and_lineage(tiny):
    from vugan.pipeline.artifacts import read_artifact

    run_dir, proc = tiny
    assert run_dir.name == "00001-tiny"
    assert _states(run_dir) == {n: "done" for n in ORDER}
    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert config["run"]["name"] == "tiny" and config["trainer"]["steps"] == 2
    assert config["run"]["manifest"].endswith("phantom/scans.csv")
    manifests = {n: read_artifact(run_dir / n) for n in ORDER}
    assert manifests["train"]["inputs"]["examples"]["fingerprint"] == manifests["preprocess"]["fingerprint"]
    assert manifests["synthesize"]["inputs"]["model"]["fingerprint"] == manifests["train"]["fingerprint"]
    assert manifests["synthesize"]["inputs"]["evaluation"]["fingerprint"] == manifests["evaluate"]["fingerprint"]
    assert manifests["export"]["inputs"]["model"]["fingerprint"] == manifests["train"]["fingerprint"]
    for name in ORDER:
        assert (run_dir / name / "log.txt").read_text().strip(), name
    # The closing summary says where everything is.
    out = proc.stdout
    assert str(run_dir / "evaluate" / "report.html") in out and (run_dir / "evaluate" / "report.html").exists()
    assert "tensorboard --logdir" in out and str(run_dir / "export" / "saved_model") in out
    assert str(run_dir / "synthesize") in out
    # Forced release iff the verdict failed, and then it is on record.
    verdict = json.loads((run_dir / "evaluate" / "verdict.json").read_text())
    release = manifests["synthesize"]["properties"]["release"]
    assert release["forced"] is (not verdict["passed"])
    if release["forced"]:
        assert "released by override" in (run_dir / "synthesize" / "datasheet.md").read_text()


def test_new_runs_never_reuse_a_folder(tmp_path):
    from vugan.pipeline.runner import new_run_dir, next_run_name

    (tmp_path / "00001-a").mkdir()
    (tmp_path / "00003-b").mkdir()
    (tmp_path / "notes").mkdir()
    assert next_run_name(tmp_path, "my demo") == "00004-my-demo"
    first = new_run_dir(tmp_path, "my demo")
    second = new_run_dir(tmp_path, "my demo")
    assert (first.name, second.name) == ("00004-my-demo", "00005-my-demo")


def test_rerun_everything_cached(tiny, tmp_path):
    run_dir = copy_run(tiny[0], tmp_path)  # a moved run folder stays valid: the cache compares fingerprints
    before = {n: (run_dir / n / "artifact.json").read_text() for n in ORDER}
    proc = vugan("run", "--run", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ORDER:
        assert f"==> {name}: CACHED" in proc.stdout
    assert _states(run_dir) == {n: "cached" for n in ORDER}
    assert before == {n: (run_dir / n / "artifact.json").read_text() for n in ORDER}
    history = json.loads((run_dir / "run.json").read_text())["history"]
    assert history[-1]["steps"] == {n: "cached" for n in ORDER}


def test_dry_run_plans_without_touching(tiny, tmp_path):
    from vugan.pipeline.runner import resolve_run_config, run_pipeline

    run_dir = copy_run(tiny[0], tmp_path)
    state_before = (run_dir / "run.json").read_text()
    config = resolve_run_config(run_dir, None, ["evaluator.grid_units=2"])
    result = run_pipeline(config, run_dir=run_dir, dry_run=True)
    plan = {s.name: (s.action, s.reason) for s in result.steps}
    assert plan["preprocess"][0] == plan["train"][0] == plan["export"][0] == "cached"
    assert plan["evaluate"] == ("run", "config changed: evaluator.grid_units 6 -> 2")
    assert plan["synthesize"][0] == "run" and "upstream evaluate" in plan["synthesize"][1]
    assert (run_dir / "run.json").read_text() == state_before
    assert "grid_units = 6" in (run_dir / "config.toml").read_text()
    # --force plans every component; a single component's plan too.
    assert {s.action for s in run_pipeline(config, run_dir=run_dir, dry_run=True, force=True).steps} == {"run"}


def test_new_run_dry_run_creates_nothing(tiny, tmp_path):
    proc = vugan("run", "--config", "configs/tiny.toml", "--runs-dir", str(tiny[0].parent), "--manifest",
                 "x.csv", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "00002-tiny" in proc.stdout and "nothing is created" in proc.stdout
    assert sorted(p.name for p in tiny[0].parent.iterdir()) == ["00001-tiny"]


def test_run_debug_is_passed_on_to_every_component(tiny, tmp_path):
    """`vugan run --debug` must reach the children: each component is its own process, and without the flag
    their tracebacks and library logs would stay in their log.txt however the user asked."""
    run_dir = copy_run(tiny[0], tmp_path)
    proc = vugan("run", "--run", str(run_dir), "--force", "--dry-run", "--debug")
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [line for line in proc.stdout.splitlines() if "vugan.pipeline.cli" in line]
    assert len(commands) == len(ORDER) and all(" --debug" in c for c in commands), proc.stdout
    proc = vugan("run", "--run", str(run_dir), "--force", "--dry-run")
    assert not any("--debug" in line for line in proc.stdout.splitlines() if "vugan.pipeline.cli" in line)


def test_audit_inside_a_run_takes_the_runs_examples_and_synthetic_set(tiny, tmp_path):
    run_dir = copy_run(tiny[0], tmp_path)
    proc = vugan("audit", "--run", str(run_dir), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(proc.stdout)
    assert plan["out"] == str(run_dir / "audit") and plan["inputs"] == {"examples": str(run_dir / "preprocess")}
    assert plan["options"] == {"synthetic": str(run_dir / "synthesize")}
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    assert plan["config"]["evaluator"]["grid_units"] == saved["evaluator"]["grid_units"]
    shutil.rmtree(run_dir / "synthesize")
    proc = vugan("audit", "--run", str(run_dir))
    assert proc.returncode == 2 and not (run_dir / "audit").exists()
    assert f"{run_dir / 'synthesize'} (--synthetic) does not exist" in proc.stderr, proc.stderr


def test_evaluator_change_reruns_the_evaluator_alone(tiny, tmp_path):
    from vugan.pipeline.artifacts import read_artifact

    run_dir = copy_run(tiny[0], tmp_path)
    before = {n: read_artifact(run_dir / n) for n in ORDER}
    proc = vugan("run", "--run", str(run_dir), "--set", "evaluator.grid_units=2", "--force-release")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    # grid_units changes the report's figures only: evaluate reruns; synthesize reads only the evaluator's
    # summary (verdict + headline metrics), which is unchanged, so it stays cached with everything else.
    for name in ("preprocess", "train", "synthesize", "export"):
        assert f"==> {name}: CACHED" in proc.stdout, proc.stdout[-3000:]
    assert "==> evaluate: runs (config changed: evaluator.grid_units 6 -> 2)" in proc.stdout
    states = _states(run_dir)
    assert states["evaluate"] == "done" and all(states[n] == "cached" for n in ORDER if n != "evaluate")
    after = {n: read_artifact(run_dir / n) for n in ORDER}
    assert [n for n in ORDER if after[n]["fingerprint"] != before[n]["fingerprint"]] == ["evaluate"]
    assert after["evaluate"]["summary_fingerprint"] == before["evaluate"]["summary_fingerprint"]
    assert after["synthesize"]["inputs"]["evaluation"]["summary_fingerprint"] == after["evaluate"]["summary_fingerprint"]
    assert "grid_units = 2" in (run_dir / "config.toml").read_text()  # the run's config follows the change


def test_component_rerun_cache_force_and_runs_listing(tiny, tmp_path):
    from vugan.pipeline.runner import list_runs

    run_dir = copy_run(tiny[0], tmp_path)
    proc = vugan("export", "--run", str(run_dir), "--dry-run")
    assert proc.returncode == 0 and "export      CACHED" in proc.stdout, proc.stdout
    proc = vugan("export", "--run", str(run_dir), "--force", "--dry-run")
    assert "export      RUN      --force" in proc.stdout
    # Another count than the evaluator judged: synthesize alone refuses, naming the link, even when forced ...
    proc = vugan("synthesize", "--run", str(run_dir), "--set", "synthesize.units_per_class=3", "--force",
                 "--force-release")
    assert proc.returncode != 0 and "count (synthesize.units_per_class) is 4 there but 3 here" in (
        proc.stdout + proc.stderr), (proc.stdout[-3000:], proc.stderr[-3000:])
    # ... and the pipeline reruns the evaluator on the new candidate, then publishes it.
    proc = vugan("run", "--run", str(run_dir), "--force-release")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "==> evaluate: runs (config changed: synthesize.units_per_class 4 -> 3)" in proc.stdout, proc.stdout[-3000:]
    from vugan.pipeline.artifacts import read_artifact

    assert read_artifact(run_dir / "synthesize")["counts"]["units"] == 3 * 3
    table = list_runs(tmp_path)
    assert run_dir.name in table and "verdict" in table.splitlines()[0]


def test_release_gate_in_a_run(tiny, tmp_path):
    from vugan.pipeline.artifacts import read_artifact, write_artifact

    run_dir = copy_run(tiny[0], tmp_path)
    # An evaluator rerun that failed the gate: new verdict, new Evaluation fingerprint.
    ev = run_dir / "evaluate"
    old = read_artifact(ev)
    judged = json.loads((ev / "verdict.json").read_text())["release"]  # the same candidate, now judged a failure
    (ev / "verdict.json").write_text(json.dumps({"passed": False, "reasons": ["mia_auc 0.9 above 0.6"],
                                                 "forced": False, "release": judged}))
    write_artifact(ev, artifact_type=old["type"], producer="evaluate", config_fingerprint=old["config_fingerprint"],
                   inputs={k: v["uri"] for k, v in old["inputs"].items()}, counts=old["counts"],
                   properties=old["properties"])
    proc = vugan("synthesize", "--run", str(run_dir))
    assert proc.returncode == 1
    assert "release gate: verdict failed (mia_auc 0.9 above 0.6)" in proc.stdout
    assert _states(run_dir)["synthesize"] == "refused"
    assert not (run_dir / "synthesize" / "artifact.json").exists()  # the old release is no longer "finished"
    from vugan.pipeline.runner import component_status

    assert component_status(run_dir, "synthesize")[0] == "refused"
    proc = vugan("synthesize", "--run", str(run_dir), "--force")  # --force reruns; it overrides no verdict
    assert proc.returncode == 1 and "release gate: verdict failed" in proc.stdout
    proc = vugan("synthesize", "--run", str(run_dir), "--force-release")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    release = read_artifact(run_dir / "synthesize")["properties"]["release"]
    assert release["forced"] and release["reasons"] == ["mia_auc 0.9 above 0.6"]
    text = (run_dir / "synthesize" / "datasheet.md").read_text()
    assert "released by override" in text and "mia_auc 0.9 above 0.6" in text


def test_resolve_run_config_layers(tiny, tmp_path):
    from vugan.pipeline.runner import resolve_run_config

    extra = tmp_path / "more.toml"
    extra.write_text("[trainer]\nsteps = 5\n[synthesize]\nunits_per_class = 7\n")
    config = resolve_run_config(tiny[0], extra, ["synthesize.units_per_class=9"])
    assert config.trainer.steps == 5 and config.synthesize.units_per_class == 9
    assert config.run.name == "tiny"  # from the saved config, not the defaults
