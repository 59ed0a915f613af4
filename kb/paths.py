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
