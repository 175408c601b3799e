"""kubectl's plugin completion protocol: candidates, then ``:<directive>``."""

from __future__ import annotations

from kubectl_kvbackup.cli.completion import DEFAULT, NO_FILE_COMPLETION, candidates, complete
from kubectl_kvbackup.cli.main import build_parser


def test_subcommands_complete():
    found, directive = candidates(build_parser(), ["gr"])
    assert found == ["graph"] and directive == NO_FILE_COMPLETION


def test_flags_complete_from_the_real_parser():
    found, _ = candidates(build_parser(), ["graph", "--all-"])
    assert found == ["--all-namespaces"]


def test_types_complete_for_positional_arguments():
    found, _ = candidates(build_parser(), ["graph", "vm"])
    assert found == ["vm/", "vmi/", "vmirs/", "vmpool/"]


def test_file_flags_leave_completion_to_the_shell():
    assert candidates(build_parser(), ["graph", "-f", ""]) == ([], DEFAULT)


def test_output_follows_cobras_protocol(capsys):
    assert complete(build_parser(), ["__complete", "graph", "-o", ""]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["dot", "json", "name", "tree", "yaml", f":{NO_FILE_COMPLETION}"]


def test_flag_values_complete_from_choices():
    assert candidates(build_parser(), ["graph", "-o", "j"]) == (["json"], NO_FILE_COMPLETION)
