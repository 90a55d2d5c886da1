"""The component contract is read generically: a toy registry of three components (none of vugan's) runs through
the real CLI and pipeline machinery, and the facts of issue 21: the pipeline names no component, one Verdict
class, no import circle through the pipeline or the release."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TOY = textwrap.dedent('''
    """Three toy components: make (Examples) -> use (Model) in a run, and look, which runs alone."""
    import dataclasses
    from pathlib import Path

    from vugan.pipeline.artifacts import ArtifactType
    from vugan.pipeline.component import (Column, CommandLine, ComponentSpec, ExecResult, ExtraArgs, Pointer)
    from vugan.pipeline.registry import Registry


    @dataclasses.dataclass(frozen=True)
    class ToyConfig:
        value: int = dataclasses.field(default=1, metadata={"range": (0, 9)})


    def make(ctx):
        word = ctx.options.get("word") or ""
        (ctx.out_dir / "made.txt").write_text(f"{ctx.config.toy.value} {word} {ctx.options.get('extra')}")
        return ExecResult(counts={"value": ctx.config.toy.value})


    def use(ctx):
        text = (ctx.inputs["examples"] / "made.txt").read_text()
        (ctx.out_dir / "result.txt").write_text(text.split()[1] if len(text.split()) > 1 else "-")
        return ExecResult(counts={"used": 1})


    def look(ctx):
        (ctx.out_dir / "looked.txt").write_text(str(ctx.inputs["examples"]))
        return ExecResult(counts={})


    def word_flag(parser):
        parser.add_argument("--word", default="")


    def in_run_folder(args):
        args.examples = args.examples or Path(args.run) / "make"
        args.out = args.out or Path(args.run) / "look"


    MAKE = ComponentSpec(
        name="make", artifact_type=ArtifactType.EXAMPLES, inputs={}, config_sections=("toy",),
        config_classes={"toy": ToyConfig}, execute=make,
        cli=CommandLine(add_arguments=word_flag, add_run_arguments=word_flag,
                        options=lambda args, extra: {"word": args.word, "extra": " ".join(extra)},
                        child_flags=lambda o: ["--word", o["word"]] if o.get("word") else [],
                        extra_args=ExtraArgs("a toy flag", lambda a: [x for x in a if not x.startswith("--toy-")])),
        options_key=lambda config, o: {"word": o.get("word")})
    USE = ComponentSpec(
        name="use", artifact_type=ArtifactType.MODEL, inputs={"examples": ArtifactType.EXAMPLES},
        config_sections=("toy",), execute=use,
        preflight=lambda inputs, o: "made with stop" if "stop" in (inputs["examples"] / "made.txt").read_text() else None,
        pointers=(Pointer("result", "result.txt", rank=1, refused_note="refused by the toy check"),),
        runs_column=Column("word", lambda folder: (folder / "result.txt").read_text()
                           if (folder / "result.txt").exists() else "-"))
    LOOK = ComponentSpec(name="look", artifact_type=ArtifactType.EVALUATION, inputs={"examples": ArtifactType.EXAMPLES},
                         config_sections=("toy",), execute=look, in_pipeline=False,
                         cli=CommandLine(in_run_folder=in_run_folder))
    REGISTRY = Registry((MAKE, USE, LOOK))
''')


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """The toy registry, in this process and in every `vugan` child (through $VUGAN_COMPONENTS)."""
    (tmp_path / "toy_components.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("VUGAN_COMPONENTS", "toy_components")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return tmp_path


def _vugan(*args):
    return subprocess.run([sys.executable, "-m", "vugan.pipeline.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_a_toy_registry_runs_through_the_cli_and_the_pipeline(toy):
    from vugan.pipeline.cli import main
    from vugan.pipeline.config import load_config
    from vugan.pipeline.registry import components

    assert components().order == ("make", "use") and list(load_config(None).sections) == ["run", "toy"]
    # Standalone, in process: its own flag becomes its option, its extra args pass the declared filter.
    assert main(["make", "--out", str(toy / "alone"), "--word", "hi", "--toy-x", "--set", "toy.value=3"]) == 0
    assert (toy / "alone" / "made.txt").read_text() == "3 hi --toy-x"
    with pytest.raises(SystemExit):
        main(["make", "--out", str(toy / "bad"), "--nope"])  # not a toy flag: refused

    runs = toy / "runs"
    proc = _vugan("run", "--runs-dir", str(runs), "--manifest", "x.csv", "--word", "hi", "--toy-y")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = runs / "00001-run"
    state = json.loads((run_dir / "run.json").read_text())
    assert {n: e["state"] for n, e in state["components"].items()} == {"make": "done", "use": "done"}
    # The child command: inputs from the run, options as declared flags, extra args last.
    assert state["components"]["make"]["command"][-3:] == ["--word", "hi", "--toy-y"]
    assert state["components"]["use"]["command"][-2:] == ["--examples", str(run_dir / "make")]
    assert f"result:          {run_dir / 'use' / 'result.txt'}" in proc.stdout  # the declared pointer
    table = _vugan("runs", "--runs-dir", str(runs)).stdout.splitlines()
    assert table[0].split()[-3:] == ["make", "use", "word"] and table[1].split()[-1] == "hi"  # declared column

    # Same options: cached. Another word: the options key reruns make, then the preflight refuses use.
    proc = _vugan("run", "--run", str(run_dir), "--word", "hi", "--toy-y")
    assert "==> make: CACHED" in proc.stdout and "==> use: CACHED" in proc.stdout, proc.stdout + proc.stderr
    proc = _vugan("run", "--run", str(run_dir), "--word", "stop")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "==> make: runs (manifest or Beam options changed)" in proc.stdout
    assert "==> use: REFUSED (made with stop)" in proc.stdout and "(refused by the toy check)" in proc.stdout

    # A component that is no step: --run fills its inputs and --out from the run folder.
    proc = _vugan("look", "--run", str(run_dir), "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["out"] == str(run_dir / "look") and plan["inputs"] == {"examples": str(run_dir / "make")}
    assert "--run" in _vugan("make", "--help").stdout  # a step takes --run; a component that runs alone
    assert "--run" not in main_help(toy)  # without an in_run_folder hook does not


def main_help(toy):
    """`vugan look --help` when look declares no in_run_folder hook."""
    spec_free = TOY.replace("cli=CommandLine(in_run_folder=in_run_folder))", ")")
    (toy / "toy_plain.py").write_text(spec_free)
    env = {**os.environ, "VUGAN_COMPONENTS": "toy_plain"}
    return subprocess.run([sys.executable, "-m", "vugan.pipeline.cli", "look", "--help"], capture_output=True,
                          text=True, timeout=300, env=env).stdout


def test_a_registry_refuses_a_broken_order():
    from vugan.components.registry import REGISTRY
    from vugan.pipeline.registry import Registry

    specs = {s.name: s for s in REGISTRY.specs}
    with pytest.raises(ValueError, match="input examples .* is made by no earlier step"):
        Registry((specs["train"], specs["preprocess"]))
    with pytest.raises(ValueError, match="is taken"):
        Registry((specs["preprocess"], specs["preprocess"]))
    with pytest.raises(ValueError, match=r"reads config section \[trainer\], which no component defines"):
        Registry((specs["preprocess"], dataclasses.replace(specs["train"], config_classes={})))


# ------------------------------------------------------------------------------------------------ issue 21 facts

def _sources(*tops: str) -> dict[str, Path]:
    out = {}
    for top in tops:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            out["vugan." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, known) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports under `if TYPE_CHECKING:` never run
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name in known}


def test_the_pipeline_names_no_component():
    from vugan.components.registry import REGISTRY

    names = "|".join(REGISTRY.names)
    hits = [f"{p.name}:{i}: {line.strip()}" for p in sorted((ROOT / "pipeline").glob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(rf"\b({names})\b", line)]
    assert hits == []
    modules = _sources("pipeline", "components")
    assert not [m for m in modules if m.startswith("vugan.pipeline.")
                for dep in _imports(modules[m], modules) if dep.startswith("vugan.components")]


def test_one_verdict_class():
    classes = [f"{p.relative_to(ROOT)}" for top in ("pipeline", "components", "models")
               for p in (ROOT / top).rglob("*.py") if re.search(r"^\s*class Verdict\b", p.read_text(), re.M)]
    assert classes == ["components/synthesize/release/verdict.py"]


def test_no_import_circle_through_the_pipeline_or_the_release():
    """Synthesize never imports the evaluator (the evaluator -> synthesize direction only), and no module of the
    pipeline, the registry, a component's contract or synthesize sits on an import circle."""
    modules = _sources("pipeline", "components", "models")
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    assert not [(m, d) for m in graph if m.startswith("vugan.components.synthesize")
                for d in graph[m] if d.startswith("vugan.components.evaluator")]

    def reaches(start, goal, seen):
        return any(d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen)) for d in graph[start])

    watched = [m for m in graph if m.startswith(("vugan.pipeline", "vugan.components.synthesize",
                                                 "vugan.components.registry")) or m.endswith("component")]
    assert [m for m in watched if reaches(m, m, set())] == []
