"""Property-based fuzzing of campaign specs: YAML text and structured mutations of a valid
spec. Every input is either a valid campaign or a clear SpecError (``field: problem``
lines, short), and the CLI exits 0 or 2 with no traceback and no partial output."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fuzz_inputs import FUZZ, mutate, mutations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartbkg_prod.cli import main
from smartbkg_prod.errors import SpecError
from smartbkg_prod.plan import campaign_output_dir, iter_jobs
from smartbkg_prod.spec import NAME_PATTERN, load_campaign, parse_campaign

VALID = {
    "name": "fuzz",
    "process": "bbbar_mixed",
    "events": 1000,
    "events_per_job": 100,
    "seed": 5,
    "filter": {"mode": "off", "threshold": 0.5},
    "simulation": {"theta_min_deg": 17.0},
    "skim": {"mbc_min": 5.23},
    "resources": {"cores": 1, "memory_mb": 2000, "walltime_s": 3600},
    "container": {"runtime": "process"},
    "backend": {"name": "local", "max_parallel": 2, "sites": {"allowed": ["a"]}},
    "retry": {"max_attempts": 3},
    "outputs": {"directory": "out"},
}
PATHS = [
    ("name",),
    ("process",),
    ("events",),
    ("events_per_job",),
    ("seed",),
    ("description",),
    ("filter",),
    ("filter", "mode"),
    ("filter", "model"),
    ("filter", "threshold"),
    ("filter", "p_min"),
    ("simulation", "theta_min_deg"),
    ("simulation", "theta_max_deg"),
    ("skim", "r2_max"),
    ("resources",),
    ("resources", "memory_mb"),
    ("resources", "walltime_s"),
    ("resources", "gpus"),
    ("container", "runtime"),
    ("container", "image"),
    ("backend", "name"),
    ("backend", "max_parallel"),
    ("backend", "sites", "allowed"),
    ("backend", "sites", "overrides"),
    ("backend", "options"),
    ("retry", "max_attempts"),
    ("outputs",),
    ("outputs", "directory"),
    ("unknown_key",),
]


def check_spec_error(error: SpecError, source: str) -> None:
    text = str(error)
    assert error.problems and all(problem.strip() for problem in error.problems)
    assert all(line.startswith(f"{source}: ") for line in text.splitlines())
    assert len(text) < 20_000, "error messages stay readable"
    assert "Traceback" not in text


def check_campaign(campaign, base: Path) -> None:
    """What every accepted spec guarantees: a portable name, a bounded plan, and outputs
    inside outputs.directory/<campaign id>."""
    import re

    assert re.match(NAME_PATTERN, campaign.name)
    assert campaign.n_jobs * campaign.events_per_job >= campaign.events
    output_dir = campaign_output_dir(campaign, base)
    root = (base / campaign.outputs.directory).resolve()
    assert output_dir.parent == root
    assert output_dir.name == campaign.campaign_id
    first = next(iter_jobs(campaign))
    assert first.first_event == 0


@FUZZ
@given(changes=mutations(PATHS))
def test_mutated_specs_are_valid_or_a_clear_spec_error(changes, tmp_path):
    data = copy.deepcopy(VALID)
    for path, action, value in changes:
        mutate(data, path, action, value)
    try:
        campaign = parse_campaign(data, "fuzz.yaml")
    except SpecError as error:
        check_spec_error(error, "fuzz.yaml")
    else:
        check_campaign(campaign, tmp_path)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_yaml_text_is_valid_or_a_clear_spec_error(text, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_campaign(path)
    except SpecError as error:
        check_spec_error(error, str(path))


yaml_documents = st.builds(
    lambda data, mutations: (data, mutations),
    st.just(VALID),
    mutations(PATHS, max_size=3),
)


@settings(
    max_examples=40,
    deadline=30_000,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=yaml_documents)
def test_cli_validate_exits_0_or_2_without_traceback(case, tmp_path):
    data, mutations = case
    data = copy.deepcopy(data)
    for path, action, value in mutations:
        mutate(data, path, action, value)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code in (0, 2), result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    assert "Traceback" not in result.output


def test_python_object_tags_are_rejected_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="could not determine a constructor for the tag"):
        load_campaign(spec)
    spec.write_text(
        "name: !!python/object:smartbkg_prod.spec.Campaign {}\nprocess: bbbar_mixed\n"
        "events: 10\nevents_per_job: 10\n"
    )
    with pytest.raises(SpecError, match="not valid YAML at line 1"):
        load_campaign(spec)
    assert not marker.exists()
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_yaml_alias_bomb_gives_a_short_error_quickly(tmp_path):
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 8)]
    lines += ["name: *l7", "process: bbbar_mixed", "events: 10", "events_per_job: 10"]
    spec = tmp_path / "bomb.yaml"
    spec.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as error:
        load_campaign(spec)
    assert len(str(error.value)) < 5000


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", "/abs", ".hidden", "", "x" * 101, "a\nb", "a b", "..", "ü"]
)
def test_campaign_names_that_could_escape_or_break_paths_are_rejected(name):
    with pytest.raises(SpecError, match="name"):
        parse_campaign({**VALID, "name": name}, "spec.yaml")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("events", 10**20),
        ("events_per_job", 2**64),
        ("resources", {"walltime_s": 2**40}),
        ("resources", {"memory_mb": 2**63}),
        ("seed", 2**40),
    ],
)
def test_values_too_large_for_the_store_or_the_worker_are_spec_errors(field, value):
    with pytest.raises(SpecError, match="out of range"):
        parse_campaign({**VALID, field: value}, "spec.yaml")


def test_a_campaign_of_too_many_jobs_is_refused_before_planning():
    with pytest.raises(SpecError, match="split the campaign"):
        parse_campaign({**VALID, "events": 10**12, "events_per_job": 1}, "spec.yaml")


def test_relative_output_directory_with_dotdot_stays_under_the_given_base(tmp_path):
    campaign = parse_campaign({**VALID, "outputs": {"directory": "../elsewhere"}}, "spec.yaml")
    base = tmp_path / "specs"
    output_dir = campaign_output_dir(campaign, base)
    # The operator chose ../elsewhere relative to base; the campaign's own files still go
    # into exactly one directory named after the campaign id.
    assert output_dir == (tmp_path / "elsewhere" / campaign.campaign_id)


@pytest.mark.parametrize(
    "change",
    [{"outputs": {"directory": "out\x00put"}}, {"filter": {"mode": "cut", "model": "m\x00.pt"}}],
)
def test_paths_with_a_nul_byte_are_spec_errors_not_tracebacks(change, tmp_path):
    with pytest.raises(SpecError, match="NUL"):
        parse_campaign({**VALID, **change}, "spec.yaml")
    spec = tmp_path / "nul.yaml"
    spec.write_text(yaml.safe_dump({**VALID, **change}))
    for command in (["validate", str(spec)], ["plan", "--json", str(spec)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "NUL" in result.output, result.output


@pytest.mark.parametrize(
    "data",
    [
        {**VALID, "backend": {"sites": {"overrides": {"\r": None}}}},  # found by hypothesis
        {**VALID, "\nspec.yaml: ok (forged line)": 1},
    ],
)
def test_keys_with_line_breaks_cannot_split_or_forge_error_lines(data):
    with pytest.raises(SpecError) as error:
        parse_campaign(data, "spec.yaml")
    check_spec_error(error.value, "spec.yaml")
    assert len(str(error.value).splitlines()) == len(error.value.problems)
