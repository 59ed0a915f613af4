"""`kb import`: format detection, all-or-nothing records files, large XML files parsed in a process pool."""

from __future__ import annotations

import gc
import gzip
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lxml import etree

from ..errors import KbError, NotFound, ParseError
from ..records import dumps_bytes as _dumps, ordinary_permissions
from . import source                      # source.BLOCK is read at call time (tests make it small)
from .medline_text import _TAG_LINE, parse_medline_text
from .pubmed_xml import _default_provenance, _records_of, parse_pubmed_xml
from .source import _parser, _read_prolog, _Source

CHUNK = 2 << 20                   # bytes of XML per parallel task
PIECE = 256 << 10                 # bytes of XML a worker parses into one tree at a time
# Tags whose end marks a safe place to cut a set into chunks, per root.
CUT_TAGS = {
    "PubmedArticleSet": (b"</PubmedArticle>", b"</PubmedBookArticle>", b"</DeleteCitation>"),
    "MedlineCitationSet": (b"</MedlineCitation>", b"</DeleteCitation>"),
    "PubmedBookArticleSet": (b"</PubmedBookArticle>", b"</DeleteDocument>"),
    "BookDocumentSet": (b"</BookDocument>", b"</DeleteDocument>"),
}


class _Malformed(Exception):
    """Raised in a worker when its chunk is not well-formed; the main process then re-reads sequentially."""


# ---------------------------------------------------------------------------------------------
# Parallel import of large XML files


def _parse_chunk(root: str, chunk: bytes, prov: dict, tmpdir: str) -> tuple[str | None, int, int]:
    """Worker: parse a run of complete top-level elements into a temporary file of JSON lines;
    returns (its name, papers, deleted). Writing a file is much cheaper than returning the bytes
    through the pool's pipe. Raises _Malformed on anything unexpected: the main process then
    re-reads the file sequentially, which reports the problem with its line number."""
    tag = root.encode()
    cuts = CUT_TAGS[root]
    lines = []
    papers = deleted = 0
    start, size = 0, len(chunk)
    while start < size:
        # One small tree at a time: a 256 kB piece's tree stays in the CPU cache while its fields are read
        # (about 20% less CPU per record than one tree per 2 MB chunk).
        end = _piece_end(chunk, start + PIECE, cuts)
        parser = _parser()
        try:  # the root element fed around the piece
            parser.feed(b"<" + tag + b">")
            parser.feed(chunk[start:end])
            parser.feed(b"</" + tag + b">")
            tree = parser.close()
        except etree.LxmlError:
            raise _Malformed() from None
        try:
            for el in tree[:]:
                for rec in _records_of(el, prov):
                    lines.append(_dumps(rec))
                    if rec["type"] == "paper":
                        papers += 1
                    else:
                        deleted += 1
        except Exception:
            raise _Malformed() from None
        del tree
        start = end
    if not lines:
        return None, 0, 0
    lines.append(b"")
    fd, name = tempfile.mkstemp(suffix=".part", dir=tmpdir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"\n".join(lines))
    return name, papers, deleted


def _piece_end(chunk: bytes, pos: int, cuts: tuple[bytes, ...]) -> int:
    """Offset just after the first record end tag that starts at or after `pos` in `chunk` (its length if
    none), searched in a window that grows, so that end tags that never occur cost little."""
    size = len(chunk)
    span = 1 << 14
    while pos < size:
        hi = min(size, pos + span)
        ends = [k + len(c) for c in cuts if (k := chunk.find(c, pos, hi)) >= 0]
        if ends:
            return min(ends)
        if hi == size:
            break
        pos = hi - max(len(c) for c in cuts) + 1    # a tag may straddle the window's end
        span *= 2
    return size


def _find_cut(fh, pos: int, limit: int, cuts: tuple[bytes, ...]) -> int:
    """File offset just after the first record end tag that starts at or after `pos` (else `limit`)."""
    longest = max(len(c) for c in cuts)
    start = pos
    while start < limit:
        fh.seek(start)
        data = fh.read(min(source.BLOCK, limit - start + longest))
        best = None
        for c in cuts:
            k = data.find(c)
            if k >= 0 and (best is None or start + k + len(c) < best):
                best = start + k + len(c)
        if best is not None and best <= limit:
            return best
        if not data or start + len(data) >= limit:
            break
        start += len(data) - longest + 1
    return limit


def _parse_range(path: str, root: str, lo: int, hi: int, body_lo: int, body_hi: int,
                 prov: dict, tmpdir: str) -> tuple[str | None, int, int]:
    """Worker: the records of a plain file whose end tags fall in the byte range owned by [lo, hi).
    Each worker aligns both ends by the same rule, so neighbouring ranges meet exactly."""
    cuts = CUT_TAGS[root]
    with open(path, "rb") as fh:
        start = body_lo if lo <= body_lo else _find_cut(fh, lo, body_hi, cuts)
        end = body_hi if hi >= body_hi else _find_cut(fh, hi, body_hi, cuts)
        if end <= start:
            return None, 0, 0
        fh.seek(start)
        chunk = fh.read(end - start)
    if len(chunk) != end - start:
        raise _Malformed()
    return _parse_chunk(root, chunk, prov, tmpdir)


def _parse_part(root: str, part: str, prov: dict, tmpdir: str) -> tuple[str | None, int, int]:
    """Worker: _parse_chunk on a chunk the main process left in a temporary file (cheaper than a pipe)."""
    with open(part, "rb") as fh:
        chunk = fh.read()
    os.unlink(part)
    return _parse_chunk(root, chunk, prov, tmpdir)


def _chunks(src: _Source, head: bytes, root: str, body_at: int) -> Iterator[memoryview]:
    """Split the body of a PubMed set read from a stream into runs of complete records, cut after a
    record end tag (views valid until the next one is asked for). Raises _Malformed when the layout is
    not the expected one. Blocks are joined once per chunk, and each end tag is searched for from the
    end (a tag that does not occur is searched for only past the last cut found), so this process
    spends its time decompressing."""
    cuts = CUT_TAGS[root]
    close = b"</" + root.encode() + b">"
    blocks, size = [head[body_at:]], len(head) - body_at
    eof = False
    while True:
        while size < CHUNK and not eof:
            data = src.read(source.BLOCK)
            if data:
                blocks.append(data)
                size += len(data)
            else:
                eof = True
        buf = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        if eof:
            end = buf.rfind(close)
            if end < 0 or buf[end + len(close):].strip():
                raise _Malformed()
            if buf[:end].strip():
                yield memoryview(buf)[:end]
            return
        cut = -1
        for tag in cuts:
            k = buf.rfind(tag, max(cut, 0))
            if k >= 0 and k + len(tag) > cut:
                cut = k + len(tag)
        if cut <= 0:
            if len(buf) > 64 * CHUNK:
                raise _Malformed()
            data = src.read(source.BLOCK)
            if data:
                blocks, size = [buf, data], len(buf) + len(data)
            else:
                blocks, eof = [buf], True
            continue
        yield memoryview(buf)[:cut]
        rest = buf[cut:]
        blocks, size = [rest], len(rest)


def _plain_body(path: Path, body_at: int, root: str) -> int | None:
    """For an uncompressed file: the offset of the root's closing tag, if only whitespace follows it."""
    close = b"</" + root.encode() + b">"
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail_at = max(body_at, size - 65536)
        fh.seek(tail_at)
        tail = fh.read()
    k = tail.rfind(close)
    if k < 0 or tail[k + len(close):].strip():
        return None
    return tail_at + k


def _worker_init():
    # Records hold no reference cycles, so reference counting frees everything; the cyclic collector
    # would only rescan the many short-lived dicts and lists. Ctrl-C is the main process's to handle.
    gc.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_freed_memory()


def _keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system: each chunk
    allocates and frees megabytes (its bytes, libxml2's tree, the JSON), and handing the pages back only to
    fault them in again cost ~5 us of system time per record. Nothing to do elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)    # M_MMAP_THRESHOLD: blocks below 32 MB come from the heap
        libc.mallopt(-1, 64 << 20)    # M_TRIM_THRESHOLD: keep up to 64 MB free at the top of the heap
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _records_parallel(tasks: Iterable[tuple], func, workers: int,
                      sink: Callable[[str | None, int, int], None]) -> None:
    """Run func(*task) in a pool of `workers` processes, handing results to `sink` in task order.
    At most 2 * workers tasks are in flight, so memory stays flat however large the file."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
    pending: deque = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(func, *task))
            if len(pending) >= 2 * workers:
                sink(*pending.popleft().result())
        while pending:
            sink(*pending.popleft().result())
    except BrokenProcessPool:
        raise KbError("a parser process died (out of memory?); try again, or import the file in smaller parts") from None
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Format detection and `kb import`


def detect_format(head: bytes, name: str) -> str:
    """'xml' or 'medline' from the first bytes of the (decompressed) content; KbError otherwise."""
    if not head.strip():
        raise KbError(f"{name}: empty file, nothing to import")
    probe = head[:4096]
    if probe.startswith(b"\xef\xbb\xbf"):
        probe = probe[3:]
    stripped = probe.lstrip()
    if stripped.startswith(b"<"):
        return "xml"
    if b"\x00" in probe:
        raise KbError(f"{name}: binary file, not PubMed XML or MEDLINE text")
    try:
        text = probe.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(probe) - 4:
            raise KbError(f"{name}: binary file, not PubMed XML or MEDLINE text") from None
        text = probe[:exc.start].decode("utf-8")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if _TAG_LINE.match(first):
        return "medline"
    raise KbError(f"{name}: unknown format (expected PubMed XML or MEDLINE text; starts with {first[:40]!r})")


def _output_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".xml", ".nbib", ".txt", ".medline"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"
    return f"import-{stem}.jsonl"


class _Out:
    """A records file written to a temporary name beside its target, renamed into place by commit()."""

    def __init__(self, target: Path):
        self.target = target
        fd, self.tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        ordinary_permissions(self.tmp)
        self.fh = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes):
        view = memoryview(data)
        while view:
            view = view[self.fh.write(view):]

    def append_file(self, name: str):
        """Append the content of file `name` (a worker's part), in the kernel where it can, then delete it."""
        with open(name, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            done = 0
            copy = getattr(os, "copy_file_range", None)
            if copy is not None:
                try:
                    while done < size:
                        n = copy(src.fileno(), self.fh.fileno(), size - done)
                        if not n:
                            break
                        done += n
                except OSError:
                    pass
            if done < size:
                src.seek(done)
                while True:
                    data = src.read(source.BLOCK)
                    if not data:
                        break
                    self.write(data)
        os.unlink(name)

    def rewind(self):
        self.fh.seek(0)
        self.fh.truncate()

    def finish(self):
        os.fsync(self.fh.fileno())
        self.fh.close()

    def commit(self):
        os.replace(self.tmp, self.target)

    def discard(self):
        if not self.fh.closed:
            self.fh.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(2, n))


def _import_one(path: Path, out: _Out, bump: Callable[[int], None], workers: int) -> tuple[int, int]:
    """Parse one input file into `out`; returns (papers, deleted)."""
    counts = [0, 0]

    def sink(part: str | None, papers: int, deleted: int):
        if part is not None:
            out.append_file(part)
        counts[0] += papers
        counts[1] += deleted
        bump(papers + deleted)

    def write_all(records: Iterable[dict]):
        batch = []
        for rec in records:
            batch.append(_dumps(rec))
            if rec["type"] == "paper":
                counts[0] += 1
            else:
                counts[1] += 1
            if len(batch) >= 256:
                batch.append(b"")
                out.write(b"\n".join(batch))
                bump(len(batch) - 1)
                batch = []
        if batch:
            batch.append(b"")
            out.write(b"\n".join(batch))
            bump(len(batch) - 1)

    name = str(path)
    with _Source(path) as src:
        head = src.head(source.BLOCK)
        fmt = detect_format(head, name)
        if fmt == "medline":
            src.close()
            write_all(parse_medline_text(path))
            return counts[0], counts[1]
        head, root, body_at, self_closing = _read_prolog(src, head)
        prov = _default_provenance(root, path.name)
        if len(head) >= source.BLOCK and root in CUT_TAGS and not self_closing and workers > 1:
            compressed = isinstance(src.stream, gzip.GzipFile)
            tmpdir = tempfile.mkdtemp(prefix=".import-", suffix=".tmp", dir=out.target.parent)
            try:
                body_end = None if compressed else _plain_body(path, body_at, root)
                if body_end is not None:
                    # Uncompressed: workers read their own byte ranges; this process reads nothing.
                    tasks = ((str(path), root, lo, min(lo + CHUNK, body_end), body_at, body_end, prov, tmpdir)
                             for lo in range(body_at, body_end, CHUNK))
                    _records_parallel(tasks, _parse_range, workers, sink)
                else:
                    # Compressed: decompress here, cut at record ends, hand the chunks over in files.
                    def parts():
                        for chunk in _chunks(src, head, root, body_at):
                            fd, part = tempfile.mkstemp(suffix=".in", dir=tmpdir)
                            with os.fdopen(fd, "wb") as fh:
                                fh.write(chunk)
                            yield root, part, prov, tmpdir

                    _records_parallel(parts(), _parse_part, workers, sink)
                return counts[0], counts[1]
            except (_Malformed, ParseError):
                # Not cleanly splittable, or broken: re-read sequentially, which gives the exact error line.
                out.rewind()
                bump(-(counts[0] + counts[1]))
                counts[0] = counts[1] = 0
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
    write_all(parse_pubmed_xml(path))
    return counts[0], counts[1]


def import_files(paths: Iterable[str | os.PathLike], data_dir: str | os.PathLike,
                 progress: bool | Callable[[int], None] | None = None) -> dict:
    """Import PubMed XML / MEDLINE text files into DIR/records/import-<stem>.jsonl, one file per input.
    All-or-nothing: records files appear only when every input parsed. progress: None = a tqdm bar when
    stderr is a terminal, True/False to force, or a callable given each increment of records."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise KbError("no files to import")
    records_dir = Path(data_dir) / "records"
    targets: dict[str, Path] = {}
    for p in paths:
        if not p.exists():
            raise NotFound(f"{p}: no such file")
        if p.is_dir():
            raise KbError(f"{p}: is a directory, not a file")
        out_name = _output_name(p)
        if out_name in targets and targets[out_name] != p:
            raise KbError(f"{p} and {targets[out_name]} would both be written to records/{out_name}; rename one")
        targets[out_name] = p
    # Sniff every input before writing anything.
    for p in paths:
        with _Source(p) as src:
            detect_format(src.head(4096), str(p))

    bar = None
    if callable(progress):
        bump = progress
    else:
        show = sys.stderr.isatty() if progress is None else bool(progress)
        if show:
            from tqdm import tqdm

            bar = tqdm(unit=" records", desc="import", file=sys.stderr, dynamic_ncols=True)
            bump = bar.update
        else:
            def bump(n):
                return None

    records_dir.mkdir(parents=True, exist_ok=True)
    outs: list[_Out] = []
    summary = {"files": 0, "records": 0, "deleted": 0, "outputs": []}
    workers = _workers()
    try:
        for p in dict.fromkeys(paths):
            out = _Out(records_dir / _output_name(p))
            outs.append(out)
            papers, deleted = _import_one(p, out, bump, workers)
            out.finish()
            summary["files"] += 1
            summary["records"] += papers
            summary["deleted"] += deleted
            summary["outputs"].append(str(out.target))
        for out in outs:
            out.commit()
    except BaseException:
        for out in outs:
            out.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
    return summary


def import_command(files, data_dir) -> dict:
    """`kb import FILE...`: import, then print a one-line summary."""
    import click

    summary = import_files(files, data_dir)
    n, records = summary["files"], summary["records"]
    click.echo(f"Imported {records:,} record{'s' if records != 1 else ''} ({summary['deleted']:,} deleted) "
               f"from {n:,} file{'s' if n != 1 else ''} into {Path(data_dir) / 'records'}")
    return summary
