import pytest

from ppml import ParameterError
from ppml.experiment.config import apply_overrides, load_config, parse_config, parse_override


def test_overrides_parse_toml_literals_and_create_sections():
    raw = apply_overrides(
        {"fl": {"rounds": 3}}, ["fl.rounds=10", "privacy.epsilon=2", "name=abc", "model.hidden=[8, 8]"]
    )
    assert raw["fl"]["rounds"] == 10
    assert raw["privacy"] == {"epsilon": 2}
    assert raw["name"] == "abc"
    assert raw["model"]["hidden"] == [8, 8]
    cfg = parse_config(raw)
    assert cfg.mode == "dp-fedavg" and cfg.fl.rounds == 10


def test_overrides_do_not_mutate_the_input():
    raw = {"fl": {"rounds": 3}}
    apply_overrides(raw, ["fl.rounds=5"])
    assert raw == {"fl": {"rounds": 3}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "fl.fraction_fit=0",
            "'fl.fraction_fit' parameter of the experiment file must be a float in the range (0, 1]. Got 0",
        ),
        ("fl.fraction_fit=1.5", "range (0, 1]. Got 1.5"),
        (
            "fl.local_epochs=0",
            "'fl.local_epochs' parameter of the experiment file must be an int in the range [1,",
        ),
        (
            "privacy.epsilon=0",
            "'privacy.epsilon' parameter of the experiment file must be a float in the range (0, inf)",
        ),
        (
            "privacy.delta=1",
            "'privacy.delta' parameter of the experiment file must be a float in the range (0, 1)",
        ),
        (
            "privacy.noise_multiplier=-1",
            "'privacy.noise_multiplier' parameter of the experiment file must be a float in the range [0, inf)",
        ),
        (
            "fl.lr_decay=0",
            "'fl.lr_decay' parameter of the experiment file must be a float in the range (0, 1]",
        ),
        ("fl.lr_decay=1.01", "range (0, 1]. Got 1.01"),
        ("fl.bogus=1", "no parameter 'fl.bogus'"),
        ("model.name='resnet'", "'model.name' parameter of the experiment file must be one of"),
    ],
)
def test_bad_values_name_the_field_and_range(override, message):
    base = (
        {"fl": {}, "privacy": {"epsilon": 1.0}}
        if override.startswith("privacy.noise") is False
        else {"fl": {}}
    )
    with pytest.raises(ParameterError) as exc:
        parse_config(apply_overrides(base, [override]))
    assert message in str(exc.value)


def test_privacy_selects_dp_sgd_or_dp_fedavg_and_needs_exactly_one_noise_setting():
    assert parse_config({"privacy": {"epsilon": 1.0}}).mode == "dp-sgd"
    assert parse_config({"fl": {}, "privacy": {"epsilon": 1.0}}).mode == "dp-fedavg"
    with pytest.raises(ParameterError, match="exactly one of"):
        parse_config({"fl": {}, "privacy": {"epsilon": 1.0, "noise_multiplier": 1.0}})


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ParameterError, match="key=value"):
        parse_override("rounds")
    with pytest.raises(ParameterError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fl\nrounds = 1")
    with pytest.raises(ParameterError, match="not valid TOML"):
        load_config(bad)
