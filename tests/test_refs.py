"""Name rules and reference parsing: property tests, and refusal before the disk is touched."""

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlops_cli.errors import InvalidName
from mlops_cli.refs import ModelRef, parse_ref, validate_name

ALLOWED = string.ascii_lowercase + string.digits + "._-"
valid_names = st.text(alphabet=ALLOWED, min_size=1, max_size=64).filter(lambda s: set(s) != {"."})


@given(valid_names)
def test_valid_names_are_accepted(name):
    assert validate_name(name) == name


@given(valid_names, st.one_of(st.none(), valid_names), st.one_of(st.none(), valid_names))
def test_references_round_trip(name, version, alias):
    ref = ModelRef(name, version=version, alias=None if version else alias)
    parsed = parse_ref(str(ref))
    assert parsed == ref


@given(st.text(min_size=1, max_size=80).filter(lambda s: not (set(s) <= set(ALLOWED) and len(s) <= 64)))
def test_names_with_other_characters_or_too_long_are_refused(name):
    with pytest.raises(InvalidName):
        validate_name(name)


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../etc", "Flights", "a" * 65, "with space", "é", "a:b"])
def test_specific_bad_names(bad):
    with pytest.raises(InvalidName):
        validate_name(bad)


@pytest.mark.parametrize("bad", ["a:b@c", "a:", "a@", ":1", "@prod", "a:../x", "A@prod"])
def test_bad_references(bad):
    with pytest.raises(InvalidName):
        parse_ref(bad)


@pytest.mark.parametrize(
    "args",
    [
        ["register", "MODEL", "--name", "../evil"],
        ["register", "MODEL", "--name", "Flights"],
        ["register", "MODEL", "--name", "ok", "--alias", "a/b"],
        ["register", "MODEL", "--name", "ok", "--version", ".."],
        ["models", "show", "x/../y"],
        ["models", "promote", "ok:1", "BAD"],
        ["models", "rollback", "..", "--alias", "production"],
    ],
)
def test_cli_refuses_invalid_names_with_exit_4_and_writes_nothing(cli, tmp_path, model_file, args):
    args = [str(model_file) if a == "MODEL" else a for a in args]
    result = cli(*args)
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith("error: invalid")
    assert not cli.registry.exists()
