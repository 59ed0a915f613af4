"""The concept lexicon (datasets/concepts.yml) and the matching of papers to concepts.

A lexicon is YAML: ``concepts`` (a list of {id, label, description, mesh, tree_prefixes, synonyms, patterns,
case_sensitive_patterns}), optional ``evidence_weights``, ``mesh_trees`` (a TSV of descriptor UI -> tree numbers,
relative to the lexicon) and ``mesh_descriptor_file`` (an NLM desc20XX.xml to extend that table).
A malformed lexicon raises ParseError naming the file and the line.

Matching gives one row per paper and concept: the best evidence kind (highest weight), the combined score
1 - prod(1 - weight) over the distinct evidence kinds that matched, and the list of all evidence
[{kind, match}] sorted by weight, then kind, then match.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import KbError, ParseError

EVIDENCE_KINDS = ("mesh-major", "mesh-minor", "title", "keyword", "abstract")
DEFAULT_WEIGHTS = {"mesh-major": 1.0, "mesh-minor": 0.7, "title": 0.9, "keyword": 0.8, "abstract": 0.5}
CONCEPT_KEYS = {"id", "label", "description", "mesh", "tree_prefixes", "synonyms", "patterns",
                "case_sensitive_patterns"}
TOP_KEYS = {"version", "concepts", "evidence_weights", "mesh_trees", "mesh_descriptor_file"}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
UI_RE = re.compile(r"^D\d{6,9}$")
TREE_RE = re.compile(r"^[A-Z]\d{2}(\.\d{3})*$")


@dataclass
class Concept:
    id: str
    label: str
    description: str = ""
    mesh: list = field(default_factory=list)
    tree_prefixes: list = field(default_factory=list)
    synonyms: list = field(default_factory=list)
    patterns: list = field(default_factory=list)
    case_sensitive_patterns: list = field(default_factory=list)
    text_res: list = field(default_factory=list)      # [(compiled, needs a word start)] on lower-cased text
    acronym_res: list = field(default_factory=list)   # the same for case_sensitive_patterns, on the text
    text_anchors: tuple | None = None     # literals one of which any text_res match contains (None: no filter)
    acronym_anchors: tuple | None = None  # the same for acronym_res, on the text as written

    def entry(self) -> dict:
        """The lexicon entry as written (for the concepts table)."""
        return {k: getattr(self, k) for k in ("id", "label", "description", "mesh", "tree_prefixes",
                                              "synonyms", "patterns", "case_sensitive_patterns")}

    def find(self, text: str | None, lower: str | None = None) -> str | None:
        """The first text match of this concept in `text`, or None (`lower`: text.lower(), if already known)."""
        if not text:
            return None
        if lower is None:
            lower = text.lower()
        anchors = self.text_anchors
        if anchors is not None:               # none of the literals occurs: no text regex can match
            for a in anchors:
                if a in lower:
                    break
            else:
                anchors = False
        if anchors is not False:
            same = len(lower) == len(text)
            for rx, boundary in self.text_res:
                hit = _search(rx, boundary, lower)
                if hit:
                    return text[hit[0]:hit[1]] if same else lower[hit[0]:hit[1]]
        anchors = self.acronym_anchors
        if anchors is not None:
            for a in anchors:
                if a in text:
                    break
            else:
                return None
        for rx, boundary in self.acronym_res:
            hit = _search(rx, boundary, text)
            if hit and not _mostly_upper(text):
                return text[hit[0]:hit[1]]
        return None


def _search(rx: re.Pattern, boundary: bool, text: str):
    """(start, end) of the first match; with `boundary`, only matches that start a word."""
    pos = 0
    while True:
        m = rx.search(text, pos)
        if m is None:
            return None
        start = m.start()
        if not boundary or start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_"):
            return start, m.end()
        pos = start + 1


def _top_level_alternation(pattern: str) -> bool:
    depth, escaped, in_class = 0, False, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
    return False


def _compile(pattern: str, lower: bool) -> tuple:
    """A compiled alternative, fast to search: a leading \\b becomes a check in Python (it would disable
    re's literal-prefix scan); for case-insensitive patterns, letters outside escapes are lower-cased and
    the pattern runs on lower-cased text (much faster than re.IGNORECASE)."""
    boundary = pattern.startswith(r"\b") and not _top_level_alternation(pattern)
    if boundary:
        pattern = pattern[2:]
    if lower:
        pattern = re.sub(r"(\\.)|([A-Z])", lambda m: m.group(1) or m.group(2).lower(), pattern)
    return re.compile(pattern), boundary


def _anchor(rx: re.Pattern) -> str | None:
    """The longest literal every match of `rx` contains (a run of top-level literal characters), or None."""
    if rx.flags & (re.IGNORECASE | re.LOCALE):
        return None
    try:
        parsed = re._parser.parse(rx.pattern, rx.flags)
    except Exception:        # a private module: without it, no prefilter
        return None
    if parsed.state.flags & (re.IGNORECASE | re.LOCALE):
        return None
    best, run = "", []
    for op, arg in list(parsed.data) + [(None, None)]:
        if op == re._constants.LITERAL:
            run.append(chr(arg))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    return best or None


def _anchors(compiled: list) -> tuple | None:
    """Literals for a cheap `in` test before a concept's regexes: no anchor occurs -> no regex can match."""
    anchors = []
    for rx, _boundary in compiled:
        a = _anchor(rx)
        if a is None:
            return None
        anchors.append(a)
    # an anchor containing another one is redundant
    return tuple(sorted({a for a in anchors if not any(b != a and b in a for b in anchors)}))


@dataclass
class Lexicon:
    path: str
    sha256: str
    concepts: list
    weights: dict
    trees: dict          # descriptor UI -> tuple of tree numbers
    tree_names: dict     # descriptor name (lower case) -> tuple of tree numbers
    mesh_cache: dict = field(default_factory=dict)

    def tree_numbers(self, ui: str | None, name: str | None) -> tuple:
        """Known tree numbers of a descriptor (by UI, else by name)."""
        if ui and ui in self.trees:
            return self.trees[ui]
        if name:
            return self.tree_names.get(name.lower(), ())
        return ()


def _prepared(concept: Concept) -> Concept:
    """The concept with its text and acronym patterns compiled for matching."""
    text = [_compile(r"\b" + re.escape(syn.strip().lower()) + r"(?!\w)", False) for syn in concept.synonyms]
    text += [_compile(p, True) for p in concept.patterns]
    concept.text_res = text
    concept.acronym_res = [_compile(p, False) for p in concept.case_sensitive_patterns]
    concept.text_anchors = _anchors(concept.text_res)
    concept.acronym_anchors = _anchors(concept.acronym_res)
    return concept


def _mostly_upper(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 8 and sum(c.isupper() for c in letters) > 0.6 * len(letters)


def _node_at(node, path):
    """The YAML node at `path` (keys and indexes) in a composed document, as near as it exists."""
    for step in path:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == step:
                    nxt = v
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            return node
    return node


def _key_node(root, path):
    """The node of the key at the end of `path` (for 'unknown key' errors), or the value node."""
    parent = _node_at(root, path[:-1])
    if isinstance(parent, yaml.MappingNode):
        for k, _v in parent.value:
            if k.value == path[-1]:
                return k
    return _node_at(root, path)


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Read and validate a lexicon file; ParseError with file:line on any problem."""
    from .paths import default_lexicon

    path = Path(path) if path else default_lexicon()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"{path}: cannot read the concept lexicon ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{path}: the concept lexicon is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParseError(f"{where}: invalid YAML in the concept lexicon ({problem})") from None

    def fail(where, message, key=False):
        node = _key_node(root, where) if key else _node_at(root, where)
        line = node.start_mark.line + 1 if node is not None else 1
        raise ParseError(f"{path}:{line}: {message}")

    if not isinstance(data, dict):
        raise ParseError(f"{path}:1: the concept lexicon must be a mapping with a 'concepts' list")
    for key in data:
        if key not in TOP_KEYS:
            fail([key], f"unknown key {key!r} (expected one of {', '.join(sorted(TOP_KEYS))})", key=True)
    items = data.get("concepts")
    if not isinstance(items, list) or not items:
        fail(["concepts"], "'concepts' must be a non-empty list")

    weights = dict(DEFAULT_WEIGHTS)
    ew = data.get("evidence_weights")
    if ew is not None:
        if not isinstance(ew, dict):
            fail(["evidence_weights"], "'evidence_weights' must be a mapping of evidence kind to weight")
        for kind, w in ew.items():
            if kind not in EVIDENCE_KINDS:
                fail(["evidence_weights", kind], f"unknown evidence kind {kind!r} "
                     f"(expected one of {', '.join(EVIDENCE_KINDS)})", key=True)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 1:
                fail(["evidence_weights", kind], f"weight of {kind!r} must be a number in (0, 1]")
            weights[kind] = float(w)

    concepts, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            fail(["concepts", i], f"concept #{i + 1} must be a mapping")
        for key in item:
            if key not in CONCEPT_KEYS:
                fail(["concepts", i, key], f"unknown key {key!r} in concept #{i + 1} "
                     f"(expected one of {', '.join(sorted(CONCEPT_KEYS))})", key=True)
        cid = item.get("id")
        if not isinstance(cid, str) or not ID_RE.match(cid):
            fail(["concepts", i, "id"] if "id" in item else ["concepts", i],
                 f"concept #{i + 1} needs an 'id' of lower-case letters, digits, '-' or '_'")
        if cid in seen:
            fail(["concepts", i, "id"], f"duplicate concept id {cid!r}")
        seen.add(cid)
        label = item.get("label")
        if not isinstance(label, str) or not label.strip():
            fail(["concepts", i, "label"] if "label" in item else ["concepts", i],
                 f"concept {cid!r} needs a 'label'")
        desc = item.get("description") or ""
        if not isinstance(desc, str):
            fail(["concepts", i, "description"], f"'description' of {cid!r} must be text")
        lists = {}
        for key in ("mesh", "tree_prefixes", "synonyms", "patterns", "case_sensitive_patterns"):
            value = item.get(key) or []
            if not isinstance(value, list):
                fail(["concepts", i, key], f"'{key}' of {cid!r} must be a list")
            for j, v in enumerate(value):
                if not isinstance(v, str) or not v.strip():
                    fail(["concepts", i, key, j], f"'{key}' of {cid!r} must hold non-empty strings")
                if key == "mesh" and not UI_RE.match(v):
                    fail(["concepts", i, key, j], f"{v!r} in {cid!r} is not a MeSH descriptor UI (like D008279)")
                if key == "tree_prefixes" and not TREE_RE.match(v):
                    fail(["concepts", i, key, j], f"{v!r} in {cid!r} is not a MeSH tree number (like C04.557.337)")
                if key in ("patterns", "case_sensitive_patterns"):
                    try:
                        re.compile(v)
                    except re.error as exc:
                        fail(["concepts", i, key, j], f"bad regular expression {v!r} in {cid!r}: {exc}")
            lists[key] = list(value)
        if not (lists["mesh"] or lists["tree_prefixes"] or lists["synonyms"] or lists["patterns"]
                or lists["case_sensitive_patterns"]):
            fail(["concepts", i], f"concept {cid!r} has nothing to match (mesh, tree_prefixes, synonyms, patterns)")
        concepts.append(_prepared(Concept(id=cid, label=label.strip(), description=desc.strip(), **lists)))

    trees: dict = {}
    names: dict = {}
    for key in ("mesh_trees", "mesh_descriptor_file"):
        ref = data.get(key)
        if ref is None:
            continue
        if not isinstance(ref, str):
            fail([key], f"'{key}' must be a file name")
        ref_path = (path.parent / ref) if not Path(ref).is_absolute() else Path(ref)
        if not ref_path.is_file():
            fail([key], f"{key} file not found: {ref_path}")
        loader = read_mesh_trees if key == "mesh_trees" else read_mesh_descriptors
        for ui, name, numbers in loader(ref_path):
            trees[ui] = tuple(sorted(set(trees.get(ui, ())) | set(numbers)))
            names[name.lower()] = trees[ui]
    return Lexicon(path=str(path), sha256=hashlib.sha256(raw).hexdigest(), concepts=concepts,
                   weights=weights, trees=trees, tree_names=names)


def read_mesh_trees(path: Path):
    """Rows (ui, name, [tree numbers]) of a mesh-trees.tsv file ('#' comments, a header row)."""
    with open(path, encoding="utf-8", newline="") as fh:
        lines = [line for line in fh if line.strip() and not line.startswith("#")]
    for lineno, row in enumerate(csv.reader(lines, delimiter="\t"), 1):
        if lineno == 1 and row and row[0] == "ui":
            continue
        if len(row) < 3 or not UI_RE.match(row[0]):
            raise ParseError(f"{path}: bad row {row[:3]!r} (expected ui, name, tree numbers separated by tabs)")
        numbers = [n.strip() for n in row[2].split(";") if n.strip()]
        for n in numbers:
            if not TREE_RE.match(n):
                raise ParseError(f"{path}: {n!r} for {row[0]} is not a MeSH tree number")
        yield row[0], row[1], numbers


def read_mesh_descriptors(path: Path):
    """Rows (ui, name, [tree numbers]) of an NLM MeSH descriptor XML file (plain or .gz), parsed safely and
    incrementally by kb.mesh (entity declarations refused, as for PubMed XML)."""
    from .mesh import read_descriptors

    yield from read_descriptors(path)


def _under(numbers, prefixes) -> bool:
    return any(n == p or n.startswith(p + ".") for n in numbers for p in prefixes)


def mesh_matches(concept: Concept, lexicon: Lexicon, ui: str | None, name: str | None) -> str | None:
    """Why a MeSH heading counts for a concept (UI, tree number or name), or None."""
    if ui and ui in concept.mesh:
        return name or ui
    numbers = lexicon.tree_numbers(ui, name)
    if numbers and concept.tree_prefixes:
        return (name or ui) if _under(numbers, concept.tree_prefixes) else None
    # Tree numbers (or the concept's prefixes) unknown: fall back to the name against the text patterns.
    if concept.find(name):
        return name
    return None


def text_hits(paper: dict, lexicon: Lexicon) -> dict:
    """{concept_id: {kind: match}} of a paper's keywords, title and abstract (the costly part of match_paper,
    which a large build runs in a helper process: it does not depend on the MeSH tree table)."""
    texts = []
    for kw in paper.get("keywords") or ():
        text = kw.get("text") if isinstance(kw, dict) else kw
        if text:
            texts.append(("keyword", text))
    for kind in ("title", "abstract"):
        if paper.get(kind):
            texts.append((kind, paper[kind]))
    found: dict[str, dict] = {}
    for kind, text in texts:
        lower = text.lower()
        for concept in lexicon.concepts:
            have = found.get(concept.id)
            if have and kind in have:
                continue
            hit = concept.find(text, lower)
            if hit:
                found.setdefault(concept.id, {})[kind] = hit
    return found


def match_paper(paper: dict, lexicon: Lexicon, texts: dict | None = None) -> list[tuple]:
    """(concept_id, best evidence, score, evidence list) for each concept a paper carries. `texts`: the
    paper's text_hits, when already known."""
    weights = lexicon.weights
    cache = lexicon.mesh_cache
    found: dict[str, dict] = {}
    for heading in paper.get("mesh") or ():
        ui, name = heading.get("ui"), heading.get("name")
        hits = cache.get((ui, name))
        if hits is None:
            hits = cache[(ui, name)] = [(c.id, h) for c in lexicon.concepts
                                        for h in (mesh_matches(c, lexicon, ui, name),) if h]
        if hits:
            major = bool(heading.get("major")) or any(q.get("major") for q in heading.get("qualifiers") or ())
            kind = "mesh-major" if major else "mesh-minor"
            for cid, hit in hits:
                found.setdefault(cid, {}).setdefault(kind, hit)
    for cid, kinds in (text_hits(paper, lexicon) if texts is None else texts).items():
        found.setdefault(cid, {}).update(kinds)
    out = []
    for concept in lexicon.concepts:
        kinds = found.get(concept.id)
        if not kinds:
            continue
        evidence = sorted(({"kind": k, "match": m} for k, m in kinds.items()),
                          key=lambda e: (-weights[e["kind"]], e["kind"], e["match"]))
        miss = 1.0
        for kind in kinds:
            miss *= 1.0 - weights[kind]
        out.append((concept.id, evidence[0]["kind"], round(1.0 - miss, 6), evidence))
    return out


# Words a search should find a concept's papers by ------------------------------------------------------------

_COMMON_WORDS = {"all", "and", "as", "can", "is", "it", "may", "not", "or", "was", "we"}
_LITERAL_RE = re.compile(r"^(?:\\b)?([A-Za-z][A-Za-z0-9]*(?:[ -][A-Za-z0-9]+)*)(?:\\b)?$")


def search_terms(concept: Concept) -> list[str]:
    """The concept's label, synonyms and the plain words among its patterns (acronyms such as AML, MRI):
    indexed with each paper carrying the concept, so a search for a synonym finds the paper."""
    terms = [concept.label] + list(concept.synonyms)
    for pattern in list(concept.patterns) + list(concept.case_sensitive_patterns):
        m = _LITERAL_RE.match(pattern)
        if m and m.group(1).lower() not in _COMMON_WORDS:      # the acronym ALL is also the word "all"
            terms.append(m.group(1))
    seen, out = set(), []
    for t in terms:
        if t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


# Concepts made from the knowledge base's own MeSH headings (kb build --concepts auto) ------------------------

AUTO_CONCEPTS = 30
# MeSH check tags (sex, age groups, species, pregnancy, historical periods) and other headings that describe
# the study rather than its topic: indexed on most papers, they would make every map one big cluster.
CHECK_TAGS = frozenset(name.lower() for name in (
    "Humans", "Animals", "Male", "Female", "Pregnancy", "Infant, Newborn", "Infant", "Child, Preschool", "Child",
    "Adolescent", "Young Adult", "Adult", "Middle Aged", "Aged", "Aged, 80 and over", "Mice", "Rats", "Cats",
    "Cattle", "Dogs", "Rabbits", "Guinea Pigs", "Cricetinae", "Swine", "Sheep", "Horses", "Chick Embryo",
    "Chickens", "Haplorhini", "Macaca mulatta", "History, 19th Century", "History, 20th Century",
    "History, 21st Century", "History, Ancient", "History, Medieval", "Molecular Sequence Data",
    "Time Factors", "Retrospective Studies", "Prospective Studies", "Follow-Up Studies", "Cohort Studies",
    "Case-Control Studies", "Cross-Sectional Studies", "Risk Factors", "Treatment Outcome",
    "Reproducibility of Results", "Sensitivity and Specificity", "Surveys and Questionnaires",
    "Cells, Cultured", "Cell Line", "Cell Line, Tumor", "Amino Acid Sequence", "Base Sequence",
    "Models, Biological", "Models, Molecular", "Disease Models, Animal", "Mice, Inbred C57BL",
    "Mice, Inbred BALB C", "Mice, Knockout", "Mice, Transgenic", "Rats, Sprague-Dawley", "Rats, Wistar",
    "HEK293 Cells", "HeLa Cells", "Incidence", "Prevalence", "Age Factors", "Sex Factors",
    "Cercopithecus aethiops", "Chlorocebus aethiops", "COS Cells", "Vero Cells", "CHO Cells", "Cricetulus",
))
CHECK_TAG_PREFIXES = ("mice, ", "rats, ", "history, ")
EXCLUDED_TREES = ("Z01", "M01", "B01.050.150.900.649.313.988.400.112.400.400")  # places, persons, Humans


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "mesh"


def _is_under(numbers, ancestor_numbers) -> bool:
    return any(n.startswith(a + ".") for n in numbers for a in ancestor_numbers)


def auto_lexicon(papers, base: Lexicon, top: int = AUTO_CONCEPTS) -> Lexicon:
    """A lexicon of the `top` most frequent MeSH descriptors of `papers` (paper dicts with "mesh"), check tags and
    geographicals left out; a descriptor below a chosen one in the MeSH tree (tree numbers from `base`) is
    counted for it instead of becoming a concept. Deterministic: ties go to the broader, then the name."""
    names: dict = {}                                     # descriptor key -> name
    ui_of: dict = {}
    paper_sets: list = []
    for p in papers:
        keys = set()
        for m in p.get("mesh") or ():
            name, ui = m.get("name"), m.get("ui")
            if not name and not ui:
                continue
            key = ui or "name:" + name.lower()
            keys.add(key)
            if key not in names or (name and name < names[key]):
                names[key] = name or ui
            ui_of[key] = ui
        if keys:
            paper_sets.append(keys)
    trees = {k: tuple(base.tree_numbers(ui_of[k], names[k])) for k in names}

    def excluded(key):          # a check tag, or every position of the heading is a place or a person
        numbers = trees[key]
        name = names[key].lower()
        return name in CHECK_TAGS or name.startswith(CHECK_TAG_PREFIXES) or bool(numbers) and all(
            any(n == e or n.startswith(e + ".") for e in EXCLUDED_TREES) for n in numbers)

    by_number = {}
    for key, numbers in trees.items():
        for n in numbers:
            by_number.setdefault(n, key)
    ancestors = {}                                       # key -> keys of descriptors at or above it
    for key, numbers in trees.items():
        up = {key}
        for n in numbers:
            parts = n.split(".")
            for i in range(1, len(parts)):
                a = by_number.get(".".join(parts[:i]))
                if a:
                    up.add(a)
        ancestors[key] = up
    rolled: dict = {}
    for keys in paper_sets:
        for a in set().union(*(ancestors[k] for k in keys)):
            rolled[a] = rolled.get(a, 0) + 1

    def depth(key):
        return min((n.count(".") for n in trees[key]), default=99)

    chosen = []
    for key in sorted(rolled, key=lambda k: (-rolled[k], depth(k), names[k].lower(), k)):
        if len(chosen) >= top:
            break
        if excluded(key) or any(c in ancestors[key] for c in chosen):
            continue
        chosen.append(key)

    if not chosen:
        raise KbError("--concepts auto: the records carry no MeSH headings to make concepts from (check tags "
                      "aside); build with the shipped lexicon or your own (--concepts FILE)")
    concepts, ids = [], set()
    for key in chosen:
        name, ui, numbers = names[key], ui_of[key], trees[key]
        cid = _slug(name)
        while cid in ids:
            cid += "-2"
        ids.add(cid)
        under = f" or a heading under it in the MeSH tree ({', '.join(numbers)})" if numbers else ""
        desc = (f"Papers indexed with the MeSH heading {name}{f' ({ui})' if ui else ''}{under}; made by "
                f"kb build --concepts auto from the knowledge base's most frequent headings "
                f"({rolled[key]} papers when built).")
        concepts.append(_prepared(Concept(
            id=cid, label=name, description=desc, mesh=[ui] if ui and UI_RE.match(ui) else [],
            tree_prefixes=[n for n in numbers if TREE_RE.match(n)],
            synonyms=[name] if "," not in name else [],
            patterns=[] if ui or "," not in name else [re.escape(name.lower())])))
    entries = [c.entry() for c in concepts]
    digest = hashlib.sha256(repr(entries).encode("utf-8")).hexdigest()
    return Lexicon(path=f"auto (top {top} MeSH descriptors)", sha256=digest, concepts=concepts,
                   weights=dict(DEFAULT_WEIGHTS), trees=base.trees, tree_names=base.tree_names)
