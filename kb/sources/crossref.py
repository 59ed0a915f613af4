"""Crossref REST: ``/works/{doi}``, the reference list the publisher deposited and ``reference-count``.

``message.reference`` entries carry ``DOI`` (when the publisher or Crossref matched one), ``unstructured``
(the printed reference), ``article-title``, ``journal-title``, ``author``, ``year``; ``reference-count``
is how many references the publisher states the work has (kb's ``stated_references``), even when the
list itself is not open. Crossref has no open cited-by (that service is for members), so this source
gives references only. Works are asked 50 at a time (``/works?filter=doi:A,doi:B,...``; the filter's
values of one name are ORed), a lone DOI or one with a comma by ``/works/{doi}``; ``mailto=`` puts kb in
Crossref's polite pool.
"""

from __future__ import annotations

from ..errors import KbError
from . import Answer, Source, Work, citation_record
from .http import path_id

BATCH = 50                      # DOIs per /works?filter= request (rows = BATCH)


def _raw(ref: dict) -> str | None:
    if ref.get("unstructured"):
        return " ".join(str(ref["unstructured"]).split())
    parts = [ref.get("author"), ref.get("article-title") or ref.get("volume-title"), ref.get("journal-title"),
             ref.get("year")]
    parts = [str(p).strip().rstrip(".") for p in parts if p and str(p).strip()]
    return ". ".join(parts) + "." if parts else None


class Crossref(Source):
    name = "crossref"
    licence = "Crossref metadata: facts, no rights reserved; references open as each publisher deposits them"
    limits = ("polite pool with mailto (contact e-mail); public/polite rate limits announced in the "
              "x-rate-limit headers; kb sends at most 5 requests/s, 50 DOIs a request; references only, no citers")
    gives_citers = False

    def _messages(self, works: list[Work]) -> dict:
        """{doi: (work message or None, provenance), or the KbError that refused its request} for the works
        with a DOI: BATCH DOIs per list request. A source that keeps failing (SourceDown) stops here."""
        from .http import SourceDown

        mailto = [("mailto", self.client.email)] if self.client.email else []
        dois = sorted({w.doi for w in works if w.doi})
        batched = [d for d in dois if "," not in d] if len(dois) > 1 else []
        requests = []
        for i in range(0, len(batched), BATCH):
            chunk = batched[i:i + BATCH]
            requests.append((chunk, "works", [("filter", ",".join("doi:" + d for d in chunk)),
                                              ("rows", str(len(chunk)))] + mailto))
        requests += [([d], f"works/{path_id(d)}", mailto) for d in dois if d not in set(batched)]
        out = {}
        for chunk, path, params in requests:
            try:
                data, prov = self.client.get(path, params)
            except SourceDown:
                raise
            except KbError as exc:
                out.update((d, exc) for d in chunk)
                continue
            message = data.get("message") if isinstance(data, dict) else None
            if path != "works":
                out[chunk[0]] = (message if isinstance(message, dict) else None, prov)
                continue
            items = message.get("items") if isinstance(message, dict) else None
            if not isinstance(items, list):
                raise KbError(f"crossref works?filter=doi:...: no item list in the answer ({len(chunk)} DOIs)")
            got = {str(m.get("DOI", "")).lower(): m for m in items if isinstance(m, dict)}
            out.update((d, (got.get(d), prov)) for d in chunk)
        return out

    def references(self, works: list[Work]) -> Answer:
        messages = self._messages(works)

        def ask(w: Work, answer: Answer):
            if not w.doi:
                return answer.note(w.key, status="not-found", message="no DOI to ask Crossref with")
            if isinstance(messages[w.doi], KbError):
                raise messages[w.doi]
            message, prov = messages[w.doi]
            if message is None:
                return answer.note(w.key, status="not-found", message=f"Crossref does not know doi:{w.doi}")
            refs = [r for r in message.get("reference") or [] if isinstance(r, dict)]
            stated = message.get("reference-count", message.get("references-count"))
            stated = int(stated) if str(stated).isdigit() else None
            for ref in refs:
                raw = _raw(ref)
                if not (ref.get("DOI") or raw):
                    continue
                answer.citations.append(citation_record(
                    w.key, None, ref.get("DOI"), self.name, prov, raw=raw, cited_title=ref.get("article-title"),
                    cited_year=ref.get("year"), cited_journal=ref.get("journal-title")))
            if not refs and stated:
                return answer.note(w.key, references=0, stated_references=stated, status="no-links",
                                   message=f"the publisher states {stated} references but deposited none openly")
            answer.note(w.key, references=len(refs), stated_references=stated)
        return self.each(works, ask)


SOURCE = Crossref
