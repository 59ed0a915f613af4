"""PubMed XML and MEDLINE text to kb records (see kb/records.py), and `kb import`.

One module per format behind this interface: ``source`` opens inputs (paths, .gz, bytes, streams) and checks
the XML prolog, ``pubmed_xml`` streams PubMed / MEDLINE XML, ``medline_text`` reads MEDLINE text (.nbib),
``values`` normalises the field values they share, and ``importer`` is `kb import` (format detection, large
XML files cut at record boundaries and parsed in a small process pool, records written in input order).

XML is read with lxml safely: no DTD is loaded, no entity is resolved, nothing touches the network, and a
document whose DOCTYPE declares entities is refused before parsing.
"""

from .importer import detect_format, import_command, import_files
from .medline_text import parse_medline_text
from .pubmed_xml import parse_pubmed_xml
from .source import BLOCK

__all__ = ["parse_pubmed_xml", "parse_medline_text", "import_files", "import_command", "detect_format", "BLOCK"]
