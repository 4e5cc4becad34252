import argparse
from dataclasses import MISSING, dataclass

import pytest

from restore.errors import OptionError
from restore.options import add_arguments, from_arguments, option, settings_check


@dataclass
class Settings:
    size: int | None = option(None, "side in pixels")
    mode: str = option("fast", "how (default: %(default)s)", choices=("fast", "slow"))
    keep: bool = option(True, "drop it", flag="--no-keep")
    force: bool = option(False, "do it anyway")


def test_fields_become_flags_and_parsed_flags_become_the_dataclass():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Settings)
    assert from_arguments(Settings, parser.parse_args([])) == Settings()
    given = parser.parse_args(["--size", "7", "--mode", "slow", "--no-keep", "--force"])
    assert from_arguments(Settings, given) == Settings(size=7, mode="slow", keep=False, force=True)
    assert "how (default: fast)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "medium"])


def test_a_field_without_default_is_a_required_flag_and_a_flag_may_have_several_names():
    @dataclass
    class Job:
        source: str  # not an option: the caller's positional argument
        task: str = option(MISSING, "what to do", choices=("a", "b"))
        report: str | None = option(None, "where", metavar="PATH")
        quiet: bool = option(False, "say nothing", flag=("-q", "--quiet"))

    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    add_arguments(parser, Job)
    assert from_arguments(Job, parser.parse_args(["x", "--task", "b", "-q"])) == Job("x", "b", quiet=True)
    assert "--report PATH" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["x"])


def test_settings_check_turns_a_checks_value_error_into_an_option_error():
    with pytest.raises(OptionError, match="--size must be even") as info:
        with settings_check():
            raise ValueError("--size must be even")
    assert isinstance(info.value, ValueError) and info.value.path is None
