"""`simkvm --version`, `simkvm schema` and `simkvm completion bash`.

The schema is checked with a real validator on the project's own plans and profiles-free
examples (they must validate) and on broken plans (a wrong type, a typo'd key, a lower-case
unit must not); the completion script is run by a real bash.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import jsonschema
import pytest
import yaml

import simkvm
from simkvm.model.plan import VersionWarning

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simkvm", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)


def test_version():
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"simkvm {simkvm.__version__}"


@pytest.fixture(scope="module")
def schema():
    out = _run("schema")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(data)
    return data


# plans/drain*.yaml are fleet files (simkvm drain), not plans: the plan schema does not describe them.
PLANS = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("plans/*.yaml"), *ROOT.glob("simkvm/examples/*.yaml")]
               if not p.name.startswith("drain"))


@pytest.mark.parametrize("path", PLANS)
def test_the_example_plans_validate(schema, path):
    data = yaml.safe_load((ROOT / path).read_text())
    jsonschema.validate(data, schema)
    if "profile" in data:  # a profile file is read by load_plan, relative to where simkvm runs
        data = {**data, "profile": str(ROOT / data["profile"])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionWarning)  # a QEMU 10 plan with a 7.2 profile
        simkvm.load_plan(data)  # and simkvm agrees


def test_the_readme_plan_with_every_section_validates(schema):
    """The README's plan file (every section, aids, a policy mapping) passes the schema."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Plan file", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    aids = readme.split("## Convergence aids", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    data = {**yaml.safe_load(block), **yaml.safe_load(aids)}
    jsonschema.validate(data, schema)


@pytest.mark.parametrize("change,where", [
    ({"vm": {"memory": True}}, "memory"),                      # a wrong type
    ({"vm": {"memory": [16]}}, "memory"),
    ({"link": {"bandwidth": "10gb/s"}}, "bandwidth"),          # the units rule: lower-case refused
    ({"link": {"bandwith": "10Gbit/s"}}, "bandwith"),          # a typo'd key
    ({"migration": {"max_iterations": 2.5}}, "max_iterations"),
    ({"vm": {"zero_fraction": 1.5}}, "zero_fraction"),
    ({"aids": {"auto_converge": {"enabled": "yes"}}}, "enabled"),
])
def test_a_wrong_plan_fails_the_schema(schema, change, where):
    data = yaml.safe_load((ROOT / "plans/example.yaml").read_text())
    for section, values in change.items():
        node = data.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                node = node.setdefault(key, {})
                node.update(value)
            else:
                node[key] = value
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(data, schema)
    assert where in "/".join(map(str, err.value.absolute_path)) or where in err.value.message


def _complete(line: str) -> list[str]:
    script = _run("completion", "bash").stdout
    words = line.split(" ")
    code = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + f")\nCOMP_CWORD={len(words) - 1}\n"
            "_simkvm\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT)
    return out.stdout.split()


def test_completion_knows_commands_subcommands_options_and_choices():
    assert {"predict", "plan", "schema", "completion"} <= set(_complete("simkvm "))
    assert _complete("simkvm pre") == ["predict", "preflight"]
    assert "--disk-io-size" in _complete("simkvm predict --disk")
    assert set(_complete("simkvm testbed ")) >= {"up", "down", "status", "guest"}
    assert _complete("simkvm predict --pattern ") == ["uniform", "sequential"]
    assert "plans/example.yaml" in _complete("simkvm predict plans/ex")
