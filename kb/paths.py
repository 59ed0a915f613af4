"""Where kb finds its embedded data and where it writes by default."""

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent

DEFAULT_DATA_DIR = Path("kb-data")
DEFAULT_DB = Path("kb.db")


def datasets_dir() -> Path:
    """The embedded `datasets/` folder: beside the package in a checkout, else under sys.prefix."""
    env = os.environ.get("KB_DATASETS")
    if env:
        return Path(env)
    for candidate in (PROJECT_DIR / "datasets", Path(sys.prefix) / "share" / "kb" / "datasets"):
        if candidate.is_dir():
            return candidate
    return PROJECT_DIR / "datasets"


def default_dataset() -> Path:
    """The seed paper's neighbourhood, used when no data directory is given."""
    return datasets_dir() / "kato2011"


def default_lexicon() -> Path:
    """The concept lexicon shipped with kb."""
    return datasets_dir() / "concepts.yml"


def metadata_file() -> Path:
    """Datasette metadata for the knowledge base (metadata.yml at the project root)."""
    for candidate in (PROJECT_DIR / "metadata.yml", Path(sys.prefix) / "share" / "kb" / "metadata.yml"):
        if candidate.is_file():
            return candidate
    return PROJECT_DIR / "metadata.yml"


def existing_dir(path, option: str) -> Path:
    """A directory the user named (e.g. --data): it must exist; nothing is created for a mistyped path."""
    from .errors import NotFound

    path = Path(path)
    if not path.exists():
        raise NotFound(f"{option} {path}: no such directory")
    if not path.is_dir():
        raise NotFound(f"{option} {path}: not a directory")
    return path


def existing_file(path, option: str) -> Path:
    """A file the user named as input (e.g. --concepts): it must exist and be a file."""
    from .errors import NotFound

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{option} {path}: " + ("not a file" if path.exists() else "no such file"))
    return path


def output_file(path, option: str) -> Path:
    """A file the user asked kb to write (e.g. --db, -o): its directory must exist (no directories are made
    for a mistyped path) and it must not be a directory itself."""
    from .errors import NotFound

    path = Path(path)
    if path.is_dir():
        raise NotFound(f"{option} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise NotFound(f"{option} {path}: directory {parent} does not exist")
    return path
