"""The one magic-line parser and subcommand registry (cli.py), and the pure "did you mean" and
progress helpers. No engine: pure tables and parsers."""
import argparse
import re

import pytest
from IPython.core.error import UsageError

from dockmagic import cli, errors, translate
from dockmagic.status import PullProgress


def test_every_subcommand_is_in_the_one_registry_and_its_help():
    registry = cli.load()
    names = set(registry)
    assert {"config", "session", "panel", "ps", "images", "logs", "exec", "stop", "start",
            "restart", "rm", "rmi", "prune", "commit", "tag", "push", "pull"} <= names
    text = cli.format_help()
    for name in names:
        assert re.search(rf"^  {name} +\S", text, re.M), name
        assert registry[name].parser.format_help().startswith(f"usage: %docker {name}")


def test_adding_a_subcommand_is_one_decorated_function():
    seen = []

    @cli.subcommand("uxcell-test", "a test subcommand", group="cells")
    @cli.argument("-n", type=int, default=3, metavar="N")
    @cli.argument("name", metavar="NAME")
    def cmd(magics, args):
        seen.append((magics, args.n, args.name))
        return "ran"

    try:
        assert cli.dispatch("M", ["uxcell-test", "-n", "5", "x"]) == "ran"
        assert seen == [("M", 5, "x")]
        assert re.search(r"^  uxcell-test +a test subcommand$", cli.format_help(), re.M)
        assert cli.dispatch("M", ["uxcell-test", "--help"]) is None and len(seen) == 1
        with pytest.raises(UsageError, match=r"uxcell-test: .*required: NAME"):
            cli.dispatch("M", ["uxcell-test"])
        with pytest.raises(ValueError, match="two %docker subcommands"):
            cli.subcommand("uxcell-test", "again")(lambda m, a: None)
    finally:
        cli.REGISTRY.pop("uxcell-test", None)


def test_mistakes_are_one_line_usage_errors_with_a_suggestion():
    with pytest.raises(UsageError, match=r"no subcommand 'imgaes' \(did you mean images\?\)"):
        cli.dispatch(None, ["imgaes"])
    with pytest.raises(UsageError, match=r"--folow \(did you mean --follow\?\).*logs --help"):
        cli.dispatch(None, ["logs", "--folow", "x"])


def test_exec_keeps_everything_after_name_as_the_command():
    args = cli.REGISTRY["exec"].parser.parse(["-u", "root", "box", "ls", "-l", "-u"])
    assert (args.user, args.name, args.cmd) == ("root", "box", ["ls", "-l", "-u"])


def test_session_line_keeps_docker_run_flags_for_the_session():
    args = cli.REGISTRY["session"].parser.parse(["work", "--gpus", "all", "-v", "a:/a", "img"])
    assert args.name == "work" and args.run_args == ["--gpus", "all", "-v", "a:/a", "img"]


@pytest.mark.parametrize("line", ["@w", "@w bash", "@w bash -l", "@w python3 -u",
                                  "@w --in x,y --out z", "@w --no-raise-error bash -l",
                                  "@w --in=x python3"])
def test_session_cell_fast_path_reads_as_argparse_does(line):
    name, fast = cli.parse_session_cell(line)
    slow = cli.SESSION_CELL.parse(line.split()[1:])
    assert name == "w" and vars(fast) == vars(slow)


def test_session_cell_mistakes():
    with pytest.raises(UsageError, match="unrecognized arguments: -v.*belong to `%docker session"):
        cli.parse_session_cell("@w -v a:b")
    with pytest.raises(UsageError, match="give the session's name"):
        cli.parse_session_cell("@ --in x")


def test_help_html_is_text_blocks_with_hanging_indents_and_nothing_to_auto_link():
    page = cli.HelpText("usage: x -v /data:/data <b>\n\n  --flag ARG   what it does")
    html = page._repr_html_()
    assert "<pre" not in html and "<a" not in html and "&lt;b&gt;" in html
    # each item a block; a two-column item continues under its description, a synopsis 4 in
    w = '<span class="dmh-w">{}</span>'.format  # a flag or path never breaks inside
    assert ('<div style="padding-left:4ch;text-indent:-4ch">usage: x '
            f'{w("-v")} {w("/data:/data")}') in html
    assert ('<div style="padding-left:15ch;text-indent:-13ch">'
            f'{w("--flag")} ARG   what it does') in html
    css = html[:html.index("</style>")]
    assert "word-break:normal" in css and "white-space:pre-wrap" in css


def test_generated_help_wraps_at_88_columns_at_spaces_with_hanging_indents():
    """`%docker --help` and every subcommand's: no line over 88 columns (some were ~200),
    no word cut, and a wrapped item continues at its hanging indent."""
    texts = [cli.format_help(), cli.GPUS.format_help(), cli.SESSION_CELL.format_help()]
    texts += [sub.parser.format_help() for sub in cli.load().values()]
    for logical in texts:
        shown = cli.HelpText(logical).text
        assert max(len(line) for line in shown.splitlines()) <= cli.HELP_WIDTH, shown
        assert shown.split() == logical.split()  # the same words, none cut or lost
    shown = cli.HelpText(cli.format_help()).text
    engine = shown[shown.index("  --engine NAME"):].splitlines()
    column = engine[0].index("run on an engine")
    assert engine[1].startswith(" " * column + "is synced") or \
        engine[1].startswith(" " * column + "synced"), engine[:2]


@pytest.mark.parametrize("flag,hint", [
    ("gpu", "; did you mean --gpus?"), ("shm-sise", "; did you mean --shm-size?"),
    ("entrypiont", "; did you mean --entrypoint?"), ("zzzz", ""),
])
def test_unknown_docker_flags_suggest_the_closest(flag, hint):
    with pytest.raises(translate.UnknownFlag) as info:
        translate.parse_run_args(f"--{flag} x img")
    assert info.value.flag == flag and hint in str(info.value)
    assert translate.suggest_flag(flag) == hint


@pytest.mark.parametrize("image,hint", [
    ("dockmagic-base:bookwrom", "dockmagic-base:bookworm"),
    ("dockmagic-bsae:bookworm", "dockmagic-base:bookworm"),
    ("dockmagic-base", "dockmagic-base:bookworm"),      # no tag means :latest
    ("localhost:5000/dm/x:eaf17fad", None),             # random tags are not typos
    ("ubuntu:22.04", None),
    ("python:3.12", "python:3.11"),                     # named; the pull still goes ahead
])
def test_local_image_suggestions(image, hint):
    local = ["dockmagic-base:bookworm", "python:3.11", "localhost:5000/dm/x:1cb8f8ee"]
    got = errors.suggest_local_image(image, local)
    assert got == (f" (did you mean {hint}, which is local?)" if hint else "")


def test_typo_distance_counts_a_swap_as_one():
    assert errors.typo_distance("bookwrom", "bookworm") == 1
    assert errors.typo_distance("abc", "abc") == 0
    assert errors.typo_distance("eaf17fad", "1cb8f8ee") > 2


def test_oom_words_name_the_limit():
    assert "at its limit of 32 MiB" in errors.describe_exit(137, "img", True, 32 << 20)
    assert "no -m limit set" in errors.describe_exit(137, "img", True, None)


def test_pull_progress_counts_layers_and_bytes():
    p = PullProgress()
    for ev in [{"status": "Pulling from dm/x", "id": "tag"},
               {"status": "Pulling fs layer", "id": "a"},
               {"status": "Already exists", "id": "b"},
               {"status": "Downloading", "id": "a",
                "progressDetail": {"current": 1 << 20, "total": 4 << 20}}]:
        p.feed(ev)
    assert p.words() == "layers 1/2 · 1 MiB of 4 MiB"
    p.feed({"status": "Download complete", "id": "a"})
    assert p.words() == "layers 1/2 · 4 MiB downloaded, extracting"  # not "4 MiB of 4 MiB"
    p.feed({"status": "Pull complete", "id": "a"})
    assert p.words() == "layers 2/2 · 4 MiB of 4 MiB" and p.fraction() == (4 << 20, 4 << 20)


def test_pull_progress_is_not_extracting_while_a_layer_waits():
    p = PullProgress()
    for ev in [{"status": "Pulling fs layer", "id": "a"}, {"status": "Waiting", "id": "b"},
               {"status": "Downloading", "id": "a",
                "progressDetail": {"current": 50 << 20, "total": 50 << 20}},
               {"status": "Download complete", "id": "a"}]:
        p.feed(ev)
    assert p.words() == "layers 0/2 · 50 MiB of 50 MiB"  # b's size is not known yet


def test_pull_progress_says_nothing_before_any_layer():
    p = PullProgress()
    p.feed({"status": "Pulling from dm/x", "id": "tag"})
    assert p.words() == "" and p.tail() == ""  # not "layers 0/0"


def test_help_shown_is_not_an_exit():
    parser = cli.UsageParser("%x", "d")
    with pytest.raises(cli.HelpShown):
        parser.parse(["--help"])
    assert isinstance(parser, argparse.ArgumentParser)
