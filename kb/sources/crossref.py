"""Crossref REST: ``/works/{doi}``, the reference list the publisher deposited and ``reference-count``.

``message.reference`` entries carry ``DOI`` (when the publisher or Crossref matched one), ``unstructured``
(the printed reference), ``article-title``, ``journal-title``, ``author``, ``year``; ``reference-count``
is how many references the publisher states the work has (kb's ``stated_references``), even when the
list itself is not open. Crossref has no open cited-by (that service is for members), so this source
gives references only. One request per DOI; ``mailto=`` puts kb in Crossref's polite pool.
"""

from __future__ import annotations

from . import Answer, Source, Work, citation_record
from .http import path_id


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
              "x-rate-limit headers; kb sends at most 5 requests/s, one per DOI; references only, no citers")
    gives_citers = False

    def references(self, works: list[Work]) -> Answer:
        def ask(w: Work, answer: Answer):
            if not w.doi:
                return answer.note(w.key, status="not-found", message="no DOI to ask Crossref with")
            params = [("mailto", self.client.email)] if self.client.email else []
            data, prov = self.client.get(f"works/{path_id(w.doi)}", params)
            message = data.get("message") if isinstance(data, dict) else None
            if not isinstance(message, dict):
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
