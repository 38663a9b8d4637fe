"""Which files the notebook-folder sync leaves out (.git, .gitignore, .dockerignore). Pure."""
import os

from dockmagic.remote import filters
from dockmagic.remote.workspace import conflict_name, scan


def ignored(rules, rel, is_dir=False):
    return filters.is_ignored(rel, is_dir, rules)


def test_gitignore_unanchored_name_matches_at_any_depth():
    rules = filters.parse_gitignore("*.log\n")
    assert ignored(rules, "a.log") and ignored(rules, "x/y/b.log")
    assert not ignored(rules, "a.logx")


def test_gitignore_slash_anchors_to_its_folder():
    rules = filters.parse_gitignore("/build\ndocs/tmp\n", base="sub")
    assert ignored(rules, "sub/build", True)
    assert not ignored(rules, "build", True)
    assert not ignored(rules, "sub/x/build", True)
    assert ignored(rules, "sub/docs/tmp")


def test_gitignore_trailing_slash_is_folders_only_and_negation_wins_last():
    rules = filters.parse_gitignore("cache/\n*.txt\n!keep.txt\n")
    assert ignored(rules, "cache", True) and not ignored(rules, "cache", False)
    assert ignored(rules, "a.txt") and not ignored(rules, "keep.txt")


def test_gitignore_double_star_and_classes():
    rules = filters.parse_gitignore("**/logs/*.gz\nout/**\nrun[0-9].csv\n")
    assert ignored(rules, "logs/a.gz") and ignored(rules, "x/y/logs/a.gz")
    assert ignored(rules, "out/a/b")
    assert ignored(rules, "run3.csv") and not ignored(rules, "runx.csv")


def test_dockerignore_is_anchored_at_the_root():
    rules = filters.parse_dockerignore("data\n./models/*.pt\n!models/keep.pt\n# comment\n")
    assert ignored(rules, "data", True)
    assert not ignored(rules, "sub/data", True)
    assert ignored(rules, "models/a.pt") and not ignored(rules, "models/keep.pt")


def test_git_folder_is_never_synced():
    assert ignored([], ".git", True) and ignored([], "sub/.git", True)


def test_rsync_literal_escapes_wildcards():
    assert filters.rsync_literal("a*b/[x]?") == "/a\\*b/\\[x]\\?"


def test_scan_applies_root_and_nested_ignore_files(tmp_path):
    def put(rel, text="x"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    put(".dockerignore", "data/raw\n")
    put(".gitignore", "*.log\n")
    put("sub/.gitignore", "local.txt\n")
    for rel in ("a.py", "a.log", "data/raw/big.bin", "data/clean.csv", "sub/local.txt",
                "sub/keep.txt", ".git/HEAD", ".dockmagic-xfer-00ab/in.npy"):
        put(rel)
    put(".gitignore", "*.log\n.dockmagic-xfer-*\n")
    files, ignored_dirs = scan(str(tmp_path))
    assert sorted(files) == [".dockerignore", ".dockmagic-xfer-00ab/in.npy", ".gitignore",
                             "a.py", "data/clean.csv", "sub/.gitignore", "sub/keep.txt"]
    assert ".git" in ignored_dirs and "data/raw" in ignored_dirs
    st = os.lstat(tmp_path / "a.py")
    assert files["a.py"] == (st.st_mtime_ns, st.st_size)


def test_conflict_copy_names_the_engine():
    assert conflict_name("results/out.txt", "rig") == "results/out.rig-conflict.txt"
    assert conflict_name("Makefile", "gpu1") == "Makefile.gpu1-conflict"
    assert conflict_name(".env", "rig") == ".env.rig-conflict"
    assert conflict_name("a.tar.gz", "rig") == "a.rig-conflict.tar.gz"


def test_agent_reports_what_changed_in_the_workspace_since_the_last_cell(tmp_path):
    """The in-container side of change-only sync (agent.workspace_state, Python 3.8 stdlib)."""
    from dockmagic import agent
    from dockmagic.remote.workspace import scan

    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("x")
    state = agent.workspace_state(str(tmp_path))
    assert state == scan(str(tmp_path))[0]  # the same (mtime_ns, size) the host side keeps
    sess = agent.Session.__new__(agent.Session)
    sess.watched = {}
    assert sess.changes(str(tmp_path)) is None  # first look: the host lists it itself
    assert sess.changes(str(tmp_path)) == [[], []]
    (tmp_path / "sub" / "b.txt").write_text("bb")
    (tmp_path / "a.txt").unlink()
    (tmp_path / "c.txt").write_text("c")
    changed, deleted = sess.changes(str(tmp_path))
    assert [c[0] for c in changed] == ["c.txt", "sub/b.txt"] and deleted == ["a.txt"]
    assert changed[1][2] == 2
