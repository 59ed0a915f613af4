"""Opening inputs for the parsers (paths, .gz, bytes, binary streams) and checking an XML prolog safely."""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from pathlib import Path
from typing import Iterator

from lxml import etree

try:  # ISA-L's inflate (the `isal` package, optional): the same bytes as gzip, about 3x less CPU
    from isal import igzip as _igzip
    from isal.isal_zlib import error as _isal_error
except ImportError:  # pragma: no cover - plain gzip then
    _igzip, _isal_error = gzip, zlib.error

from ..errors import KbError, NotFound, ParseError

BLOCK = 1 << 20                   # bytes read at a time; `kb import` parses files up to this size in-process
PROLOG_MAX = 1 << 20              # the XML declaration, DOCTYPE and root tag must fit in this

# Roots we accept, and the provenance source each gets by default.
ROOTS = {
    "PubmedArticleSet": "pubmed-xml",
    "MedlineCitationSet": "medline-xml",
    "PubmedBookArticleSet": "pubmed-xml",
    "BookDocumentSet": "pubmed-xml",
    "PubmedArticle": "pubmed-xml",
    "PubmedBookArticle": "pubmed-xml",
    "MedlineCitation": "medline-xml",
    "BookDocument": "pubmed-xml",
}


class _Incomplete(ParseError):
    """The prolog runs past the bytes read so far."""


def _parser() -> etree.XMLParser:
    """The one XML parser configuration kb uses: no DTD, no entities, no network."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


# ---------------------------------------------------------------------------------------------
# Opening sources


class _Chain(io.RawIOBase):
    """A binary stream that replays `head` and then reads on from `rest`."""

    def __init__(self, head: bytes, rest):
        self._head = head
        self._rest = rest

    def readable(self):
        return True

    def readinto(self, b):
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b)) if self._rest is not None else b""
        n = len(data)
        b[:n] = data
        return n


class _Source:
    """An input opened for reading: a binary stream of the (decompressed) content and a name for messages."""

    def __init__(self, source):
        self._close = None
        if isinstance(source, str) and source.lstrip()[:1] == "<":
            source = source.encode("utf-8")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name = "<bytes>"
            self.request = None
            raw = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.name = str(path)
            self.request = path.name
            try:
                raw = open(path, "rb")
            except FileNotFoundError:
                raise NotFound(f"{path}: no such file") from None
            except IsADirectoryError:
                raise KbError(f"{path}: is a directory, not a file") from None
            except OSError as exc:
                raise KbError(f"{path}: cannot open ({exc.strerror or exc})") from None
            self._close = raw.close
        elif hasattr(source, "read"):
            name = getattr(source, "name", None)
            self.name = str(name) if isinstance(name, (str, os.PathLike)) else "<stream>"
            self.request = Path(name).name if isinstance(name, (str, os.PathLike)) else None
            raw = source
        else:
            raise TypeError(f"cannot read PubMed data from {type(source).__name__}")
        magic = self._read(raw, 2)
        if isinstance(magic, str):
            raise KbError(f"{self.name}: open the file in binary mode")
        stream = _Chain(magic, raw)
        if magic == b"\x1f\x8b":
            stream = _igzip.GzipFile(fileobj=io.BufferedReader(stream, BLOCK), mode="rb")
        self.stream = stream

    def _read(self, raw, n):
        try:
            return raw.read(n)
        except OSError as exc:
            raise KbError(f"{self.name}: cannot read ({exc})") from None

    def read(self, n: int = BLOCK) -> bytes:
        """Read up to n bytes; corrupt or truncated compressed data becomes a ParseError."""
        try:
            return self.stream.read(n)
        except (EOFError, zlib.error, _isal_error, gzip.BadGzipFile) as exc:
            raise ParseError(f"{self.name}: truncated or corrupt gzip data ({exc})") from None
        except OSError as exc:
            raise KbError(f"{self.name}: cannot read ({exc})") from None

    def blocks(self, first: bytes = b"") -> Iterator[bytes]:
        if first:
            yield first
        while True:
            data = self.read(BLOCK)
            if not data:
                return
            yield data

    def head(self, size: int = BLOCK) -> bytes:
        """Read until at least `size` bytes or the end."""
        parts, got = [], 0
        while got < size:
            data = self.read(size - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def close(self):
        if self._close:
            self._close()
            self._close = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# The XML prolog: refuse entity declarations before any parser sees them

_NAME_RE = re.compile(rb"[A-Za-z_:][-\w.:]*")


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _xml_prolog(head: bytes, name: str) -> tuple[str, int, bool]:
    """Check the prolog of an XML document: returns (root tag, offset just after the root's start tag,
    whether the root is self-closing). Refuses DOCTYPEs that declare entities, and non-UTF-8 encodings."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
        bom = 3
    else:
        bom = 0
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head[:4] in (b"\x00<\x00?", b"<\x00?\x00"):
        raise ParseError(f"{name}: UTF-16 XML is not supported (PubMed XML is UTF-8)")
    n = len(head)
    i = 0
    while True:
        while i < n and head[i] in b" \t\r\n":
            i += 1
        if i >= n:
            raise _Incomplete(f"{name}: no root element found in the first {len(head)} bytes (not PubMed XML)")
        if head.startswith(b"<?", i):
            end = head.find(b"?>", i)
            if end < 0:
                raise _Incomplete(f"{name}: unterminated XML declaration")
            decl = head[i:end]
            if i == 0 or head[:i].strip() == b"":
                m = re.search(rb"encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']", decl)
                if m and m.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii", b"ascii"):
                    raise ParseError(f"{name}: XML encoding {m.group(1).decode()} is not supported "
                                     f"(PubMed XML is UTF-8)")
            i = end + 2
        elif head.startswith(b"<!--", i):
            end = head.find(b"-->", i + 4)
            if end < 0:
                raise _Incomplete(f"{name}: unterminated comment before the root element")
            i = end + 3
        elif head.startswith(b"<!DOCTYPE", i):
            i = _doctype_end(head, i, name)
        elif head.startswith(b"<", i):
            m = _NAME_RE.match(head, i + 1)
            if not m:
                raise ParseError(f"{name}: not XML (unexpected {head[i:i + 20]!r})")
            root = m.group(0).decode("ascii", "replace")
            j, _ = _next_unquoted(head, m.end(), b">")
            if j < 0:
                raise _Incomplete(f"{name}: unterminated root start tag <{root}")
            return root, bom + j + 1, head[j - 1] == 47  # '/'
        else:
            raise ParseError(f"{name}: not XML (text before the root element)")


def _next_unquoted(head: bytes, j: int, stops: bytes, skip_comments: bool = False) -> tuple[int, int]:
    """(offset, byte) of the first byte of `stops` at or after `j` outside quoted strings (and, with
    `skip_comments`, outside <!-- comments -->); (-1, 0) when `head` ends first."""
    n = len(head)
    quote = None
    while j < n:
        c = head[j]
        if quote:
            if c == quote:
                quote = None
        elif c in b"\"'":
            quote = c
        elif skip_comments and c == 60 and head.startswith(b"<!--", j):
            end = head.find(b"-->", j + 4)
            if end < 0:
                return -1, 0
            j = end + 2
        elif c in stops:
            return j, c
        j += 1
    return -1, 0


def _doctype_end(head: bytes, i: int, name: str) -> int:
    """Offset after a DOCTYPE declaration; refuses an internal subset that declares entities."""
    j = i + 9
    while True:
        j, c = _next_unquoted(head, j, b"[>")
        if j < 0:
            raise _Incomplete(f"{name}: unterminated DOCTYPE declaration")
        if c == 62:  # '>'
            return j + 1
        # '[': the internal subset, up to its closing ']' (quotes and comments skipped)
        end, _ = _next_unquoted(head, j + 1, b"]", skip_comments=True)
        if end < 0:
            raise _Incomplete(f"{name}: unterminated DOCTYPE internal subset")
        if b"<!entity" in head[j + 1:end].lower():
            raise ParseError(f"{name}: refused: the DOCTYPE declares entities (possible XXE or "
                             f"entity-expansion attack); PubMed XML never does")
        j = end + 1


def _read_prolog(src: "_Source", head: bytes, check_root: bool = True) -> tuple[bytes, str, int, bool]:
    """Check the prolog at the start of `head`, reading up to PROLOG_MAX more bytes when it is longer, and
    (unless told not to, for other NLM formats) that the root is PubMed's; returns (head, root, body offset,
    self-closing root)."""
    try:
        root, body_at, closed = _xml_prolog(head, src.name)
    except _Incomplete:
        if len(head) < BLOCK:
            raise
        head += src.head(PROLOG_MAX)
        root, body_at, closed = _xml_prolog(head, src.name)
    if check_root:
        _check_root(root, src.name)
    return head, root, body_at, closed


def _check_root(root: str, name: str) -> None:
    if root not in ROOTS:
        raise ParseError(f"{name}: not PubMed XML (root element <{root}>; expected PubmedArticleSet or "
                         f"MedlineCitationSet)")


def _syntax_message(name: str, exc: etree.XMLSyntaxError, log=None) -> str:
    """One line: file, line and what libxml2 found first (the exception text alone is sometimes vague).
    `log` is the parser's own error log: the exception's may hold errors of earlier, unrelated parses."""
    msg, line = exc.msg, exc.lineno or (exc.position[0] if exc.position else None)
    try:
        errors = (log if log is not None else exc.error_log).filter_from_errors()
    except AttributeError:  # pragma: no cover
        errors = None
    if errors:
        msg, line = errors[0].message, errors[0].line or line
    msg = re.sub(r",? line \d+, column \d+$", "", _one_line(msg or exc))
    hint = "malformed XML"
    if re.search(r"Premature end of data|EndTag: '</' not found|no element found|not properly terminated|"
                 r"Couldn't find end of Start Tag|expected '>'", msg):
        hint = "malformed or truncated XML"
    return f"{name}: line {line}: {hint} ({msg})" if line else f"{name}: {hint} ({msg})"
