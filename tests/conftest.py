"""Shared pytest configuration. Area-specific fixtures live beside their tests."""

import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture
def fixtures_dir():
    return FIXTURES


@pytest.fixture(autouse=True, scope="session")
def _pubmed_only_by_default():
    """`kb fetch` asks every citation source by default; tests that do not point the open sources at
    tests/fake_sources.py ask PubMed (the fake E-utilities) only, so nothing tries the real internet.
    Session scope: module fixtures that run `kb fetch` subprocesses see it too."""
    patch = pytest.MonkeyPatch()
    if "KB_SOURCES" not in os.environ:
        patch.setenv("KB_SOURCES", "pubmed")
    yield
    patch.undo()


@pytest.fixture(scope="session")
def fixture_db(tmp_path_factory):
    """The knowledge base built from tests/fixtures/build, once per session: read it, never write it."""
    from kb.records import record_files
    from kb.store import build

    path = tmp_path_factory.mktemp("fixture-kb") / "kb.db"
    build(record_files(os.path.join(FIXTURES, "build")), path)
    return path

