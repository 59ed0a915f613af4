"""Europe PMC REST: ``/MED/{pmid}/references`` and ``/MED/{pmid}/citations`` (JSON, paged).

Each answer carries ``hitCount`` and one page (``page`` from 1, ``pageSize`` up to 1000) of
``referenceList.reference`` or ``citationList.citation`` entries with ``id``/``source`` (MED = a PMID,
PMC = a PMCID...), ``doi``, ``title``, ``authorString``, ``journalAbbreviation``, ``pubYear``. kb
reads pages until it has ``hitCount`` entries or a page comes back empty (a server that counts more
than it lists cannot make it loop). One request per paper and direction: the API has no batch form.
"""

from __future__ import annotations

from . import Answer, Source, Work, citation_record

PAGE_SIZE = 1000


def _text(entry: dict) -> str | None:
    """A reference string from the entry's fields, for references without identifiers."""
    parts = [entry.get("authorString"), entry.get("title"), entry.get("journalAbbreviation"),
             str(entry.get("pubYear") or "") or None]
    parts = [str(p).strip().rstrip(".") for p in parts if p and str(p).strip()]
    return ". ".join(parts) + "." if parts else None


def _int(value) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _ids(entry: dict) -> tuple[str | None, str | None]:
    pmid = str(entry.get("id") or "").strip() if str(entry.get("source") or "").upper() == "MED" else ""
    return (pmid if pmid.isdigit() else None), (entry.get("doi") or None)


class EuropePMC(Source):
    name = "europepmc"
    licence = "Europe PMC REST API; bibliographic metadata open (CC0 for the metadata Europe PMC itself provides)"
    limits = "no published hard limit (EMBL-EBI fair use); kb sends at most 5 requests/s, one per paper and direction"
    page_size = PAGE_SIZE

    def _pages(self, pmid: str, what: str, list_key: str, item_key: str):
        """Every entry of a paged list, and the provenance of the first page."""
        entries, page, first = [], 1, None
        while True:
            data, prov = self.client.get(f"MED/{pmid}/{what}",
                                         [("format", "json"), ("page", page), ("pageSize", self.page_size)])
            first = first or prov
            if data is None:
                return None, prov
            box = data.get(list_key) if isinstance(data, dict) else None
            items = box.get(item_key) if isinstance(box, dict) else None
            items = items if isinstance(items, list) else []
            entries.extend(i for i in items if isinstance(i, dict))
            total = _int(data.get("hitCount")) if isinstance(data, dict) else 0
            # stop at the count, at an empty page, or past the last page the count allows (a server that
            # ignores `page` or counts more than it lists cannot keep kb paging)
            request = data.get("request") if isinstance(data, dict) else None
            size = (_int(request.get("pageSize")) if isinstance(request, dict) else 0) or len(items)  # as served
            if not items or len(entries) >= total or page * size >= total + size:
                return entries, first
            page += 1

    def _entries(self, w: Work, answer: Answer, *what: str):
        """Every entry of a work's references or citations, or None (noted as not found) when Europe PMC
        cannot be asked (no PMID) or does not know the work."""
        if not w.pmid:
            answer.note(w.key, status="not-found", message="no PMID to ask Europe PMC with")
            return None, None
        entries, prov = self._pages(w.pmid, *what)
        if entries is None:
            answer.note(w.key, status="not-found", message=f"Europe PMC has no MED/{w.pmid}")
        return entries, prov

    def references(self, works: list[Work]) -> Answer:
        def ask(w: Work, answer: Answer):
            entries, prov = self._entries(w, answer, "references", "referenceList", "reference")
            if entries is None:
                return
            for e in entries:
                pmid, doi = _ids(e)
                raw = None if pmid else _text(e)   # a work without PMID: its text names it in the build
                answer.citations.append(citation_record(
                    w.key, pmid, doi, self.name, prov, raw=raw, cited_title=e.get("title"),
                    cited_year=e.get("pubYear"), cited_journal=e.get("journalAbbreviation")))
            answer.note(w.key, references=len(entries))
        return self.each(works, ask)

    def citers(self, works: list[Work]) -> Answer:
        def ask(w: Work, answer: Answer):
            entries, prov = self._entries(w, answer, "citations", "citationList", "citation")
            if entries is None:
                return
            n = 0
            for e in entries:
                pmid, doi = _ids(e)
                if not (pmid or doi):
                    continue
                n += 1
                answer.citations.append(citation_record(f"pmid:{pmid}" if pmid else f"doi:{doi.lower()}",
                                                        w.pmid, w.doi, self.name, prov))
            answer.note(w.key, citers=n)
        return self.each(works, ask)


SOURCE = EuropePMC
