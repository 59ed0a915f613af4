"""Bad arguments to kb build, kb serve and kb export: each fails with one line and a non-zero exit, before
anything is built, written or created (issue 11, findings 7, 12 and 13)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kb.cli import cli

FIXTURE = Path(__file__).parent / "fixtures" / "build"


@pytest.fixture(scope="module")
def db_path(fixture_db):
    return fixture_db


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory: the no-argument defaults (./kb.db, ./kb-data) would land here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def fails_in_one_line(args, workdir, *, expect: str) -> str:
    """Run kb with `args`; it must exit non-zero with one line (containing `expect`), no traceback, and leave the
    working directory as it was."""
    before = tree(workdir)
    result = CliRunner().invoke(cli, args)
    output = result.output.strip()
    assert result.exit_code != 0, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert len(output.splitlines()) == 1, output
    assert output.startswith("Error: ") and expect in output, output
    assert tree(workdir) == before, "something was created"
    return output


# ------------------------------------------------------------------------------------ paths that do not exist

@pytest.mark.parametrize("args, expect", [
    (["serve", "--db", "mistyped.db"], "database not found: mistyped.db"),
    (["serve", "--db", "no-such-dir/kb.db"], "database not found: no-such-dir/kb.db"),
    (["serve", "--db", "no-such-dir/kb.db", "--rebuild"], "directory no-such-dir does not exist"),
    (["serve", "--data", "no-such-data"], "--data no-such-data: no such directory"),
    (["serve", "--data", "no-such-data", "--db", "mistyped.db"], "--data no-such-data: no such directory"),
    (["build", "--data", "no-such-data"], "no-such-data"),
    (["build", "--db", "no-such-dir/kb.db"], "directory no-such-dir does not exist"),
    (["build", "--concepts", "no-such-lexicon.yml"], "no-such-lexicon.yml"),
    (["export", "ris", "--db", "mistyped.db"], "database not found: mistyped.db"),
])
def test_missing_paths(workdir, args, expect):
    fails_in_one_line(args, workdir, expect=expect)
    assert not (workdir / "kb.db").exists() and not (workdir / "no-such-dir").exists()


def test_export_into_a_missing_directory(workdir, db_path):
    fails_in_one_line(["export", "ris", "--db", str(db_path), "-o", "no-such-dir/out.ris"], workdir,
                      expect="-o no-such-dir/out.ris: directory no-such-dir does not exist")


def test_serve_a_directory_as_database(workdir):
    (workdir / "adir").mkdir()
    fails_in_one_line(["serve", "--db", "adir"], workdir, expect="is a directory")


# ------------------------------------------------------------------------------------------- ports and hosts

@pytest.mark.parametrize("port", ["99999", "65536", "-5", "abc", "8001x", ""])
def test_bad_ports(workdir, port):
    out = fails_in_one_line(["serve", "--port", port], workdir, expect="is not a port")
    assert "1 to 65535" in out and "host" not in out


@pytest.mark.parametrize("host", ["no-such-host.invalid", "999.1.1.1", "192.0.2.1"])
def test_bad_hosts(workdir, host):
    out = fails_in_one_line(["serve", "--host", host, "--port", "0"], workdir, expect=f"host {host!r}")
    assert "--host" in out


def test_port_zero_serves_on_a_free_port_and_says_which(workdir, monkeypatch):
    """--port 0: the system picks a free port; the real one is printed and served on."""
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.update(kwargs))
    shutil.copytree(FIXTURE / "records", workdir / "kb-data" / "records")
    result = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code == 0, result.output
    port = calls["port"]
    assert isinstance(port, int) and 0 < port <= 65535
    assert f"at http://127.0.0.1:{port}/" in result.output and ":0/" not in result.output
    assert (workdir / "kb.db").is_file()      # the no-argument case: ./kb.db built first


# ------------------------------------------------------------------------------------------- export subsets

@pytest.mark.parametrize("extra, expect", [
    (["--where", "yeer > 2000"], "--where 'yeer > 2000': no such column: yeer"),
    (["--where", "year > 2000; drop table papers"], "--where"),
    (["--where", "year >"], "--where 'year >'"),
    (["--where", "  "], "--where needs a condition"),
    (["--query", "no_such_query"], "no canned query 'no_such_query'; the queries are:"),
    (["--query", "citing_papers", "-p", "nope", "1"], "has no parameter 'nope'"),
    (["--query", "citing_papers"], "give its parameters with -p: -p paper VALUE"),
    (["-p", "paper", "pmid:1"], "there is no --query"),
    (["--where", "year > 2000", "--query", "most_cited"], "not both"),
    (["--where", "year > 2000", "--graph", "concepts"], "not to --graph concepts"),
])
def test_bad_export_selections(workdir, db_path, extra, expect):
    fmt = "graphml" if "--graph" in extra else "bibtex"
    before = db_path.read_bytes()
    fails_in_one_line(["export", fmt, "--db", str(db_path), "-o", "out.bib", *extra], workdir, expect=expect)
    assert db_path.read_bytes() == before


def test_where_runs_read_only(db_path, tmp_path):
    """One statement only, under an authorizer that allows reading only, even on a writable connection."""
    import sqlite3

    from kb.errors import KbError
    from kb.export import _read_only, select_where

    copy = tmp_path / "copy.db"
    shutil.copy(db_path, copy)
    conn = sqlite3.connect(copy)
    with pytest.raises(KbError, match="--where"):
        select_where(conn, "1) ; attach database 'x.db' as x; select (1")
    assert select_where(conn, "year >= 2010") == ["pmid:1", "pmid:5"]
    conn.set_authorizer(_read_only)
    for sql in ("delete from papers", "attach database 'x.db' as x", "pragma journal_mode = wal",
                "create table t(x)"):
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute(sql)
    conn.set_authorizer(None)
    assert conn.execute("select count(*) from papers").fetchone()[0] > 0
    conn.close()
    assert sorted(os.listdir(tmp_path)) == ["copy.db"]


def test_make_serve_passes_port_and_host():
    """`make serve PORT=8002 HOST=...` (the README's way to change them) reaches kb serve; DB/DATA likewise."""
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parent.parent

    def line(*args):
        out = subprocess.run(["make", "-n", "-C", str(root), "serve", *args], capture_output=True, text=True,
                             check=True).stdout
        return next(l for l in out.splitlines() if "kb serve" in l)

    assert line().rstrip().endswith("kb serve --host '127.0.0.1' --port '8001'")
    assert "--host '0.0.0.0' --port '8002'" in line("PORT=8002", "HOST=0.0.0.0")
    assert "--db 'my.db' --data 'my-data'" in line("DB=my.db", "DATA=my-data")
