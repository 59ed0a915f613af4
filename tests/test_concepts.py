"""The concept lexicon: validation with line numbers, and matching by each kind of evidence."""

import textwrap

import pytest

from kb.concepts import load_lexicon, match_paper
from kb.errors import ParseError


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon()          # the shipped datasets/concepts.yml


def concepts(paper, lexicon):
    return {cid: (best, score, [e["kind"] for e in ev]) for cid, best, score, ev in match_paper(paper, lexicon)}


def test_shipped_lexicon(lexicon):
    ids = [c.id for c in lexicon.concepts]
    assert ids == ["mri", "bone-marrow", "leukemia", "lymphoma", "neuroblastoma"]
    mesh = {c.id: c.mesh for c in lexicon.concepts}
    assert mesh == {"mri": ["D008279"], "bone-marrow": ["D001853"], "leukemia": ["D007938"],
                    "lymphoma": ["D008223"], "neuroblastoma": ["D009447"]}
    assert lexicon.trees["D007938"] == ("C04.557.337",)


def test_each_evidence_kind(lexicon):
    assert concepts({"mesh": [{"ui": "D009447", "name": "Neuroblastoma", "major": True}]}, lexicon) == \
        {"neuroblastoma": ("mesh-major", 1.0, ["mesh-major"])}
    # a major qualifier makes the heading major
    assert concepts({"mesh": [{"ui": "D001853", "name": "Bone Marrow", "major": False,
                               "qualifiers": [{"name": "pathology", "major": True}]}]}, lexicon) == \
        {"bone-marrow": ("mesh-major", 1.0, ["mesh-major"])}
    assert concepts({"mesh": [{"ui": "D008223", "name": "Lymphoma", "major": False}]}, lexicon) == \
        {"lymphoma": ("mesh-minor", 0.7, ["mesh-minor"])}
    assert concepts({"keywords": [{"text": "Diffusion-weighted imaging"}]}, lexicon) == \
        {"mri": ("keyword", 0.8, ["keyword"])}
    assert concepts({"title": "Hodgkin disease in adults"}, lexicon) == {"lymphoma": ("title", 0.9, ["title"])}
    assert concepts({"abstract": "We used whole-body MRI."}, lexicon) == {"mri": ("abstract", 0.5, ["abstract"])}


def test_combined_score_and_evidence_order(lexicon):
    paper = {"title": "Bone marrow imaging", "abstract": "The marrow was studied.",
             "mesh": [{"ui": "D001853", "name": "Bone Marrow", "major": False}],
             "keywords": [{"text": "marrow"}]}
    best, score, kinds = concepts(paper, lexicon)["bone-marrow"]
    assert best == "title"
    assert kinds == ["title", "keyword", "mesh-minor", "abstract"]
    assert score == pytest.approx(1 - (1 - 0.9) * (1 - 0.8) * (1 - 0.7) * (1 - 0.5))


def test_tree_number_subsumption(lexicon):
    # Leukemia, Myeloid, Acute (C04.557.337.539.275) is under Leukemia (C04.557.337) by its tree number
    paper = {"mesh": [{"ui": "D015470", "name": "Leukemia, Myeloid, Acute", "major": False}]}
    assert concepts(paper, lexicon) == {"leukemia": ("mesh-minor", 0.7, ["mesh-minor"])}


def test_tree_prefix_only_concept(tmp_path):
    (tmp_path / "trees.tsv").write_text(
        "ui\tname\ttree_numbers\tsource\n"
        "D000001\tAlpha Disease\tC99.100.200\ttest\n"
        "D000002\tBeta Syndrome\tC99.100\ttest\n"
        "D000003\tHaemic Thing\tC98.100\ttest\n")
    (tmp_path / "lex.yml").write_text(textwrap.dedent("""\
        mesh_trees: trees.tsv
        concepts:
          - id: c99
            label: C99 branch
            tree_prefixes: [C99.100]
            patterns: ['haemic']
        """))
    lex = load_lexicon(tmp_path / "lex.yml")
    hit = lambda ui, name: bool(match_paper({"mesh": [{"ui": ui, "name": name}]}, lex))
    assert hit("D000001", "Alpha Disease")          # deeper tree number
    assert hit("D000002", "Beta Syndrome")          # the prefix itself
    assert not hit("D000003", "Haemic Thing")       # known tree number outside the branch: name not used
    assert hit("D999999", "Haemic Other")           # unknown tree numbers: falls back to the name
    assert not hit("D999998", "C99.100 lookalike")  # a prefix is matched on tree numbers, not on text


def test_spelling_variants_and_word_boundaries(lexicon):
    for text in ("acute leukaemia", "Leukemia", "leukaemias in children", "leukemic blasts",
                 "acute lymphoblastic leukemia"):
        assert "leukemia" in concepts({"title": text}, lexicon), text
    for text in ("leukemogenesis", "immunoradiometric", "narrow escape", "lymphomatoid papulosis"):
        assert concepts({"title": text}, lexicon) == {}, text
    assert "bone-marrow" in concepts({"title": "Marrow edema"}, lexicon)
    assert "mri" in concepts({"title": "MR imaging of the spine"}, lexicon)
    assert "mri" in concepts({"title": "DWI findings"}, lexicon)


def test_acronyms_are_case_sensitive(lexicon):
    assert "leukemia" in concepts({"abstract": "Children with ALL and AML were included."}, lexicon)
    assert "leukemia" not in concepts({"abstract": "all children were included"}, lexicon)
    assert "leukemia" not in concepts({"title": "ALL THE PATIENTS RECOVERED WELL"}, lexicon)   # all capitals
    assert "leukemia" not in concepts({"abstract": "ALLERGY and SMALL cohorts"}, lexicon)


def write(tmp_path, text):
    path = tmp_path / "lexicon.yml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text, line, message", [
    ("concepts:\n  - id: a\n    label: [unclosed\n", 4, "invalid YAML"),
    ("concepts:\n  - id: a\n    label: A\n    synonym: [x]\n", 4, "unknown key 'synonym'"),
    ("concepts:\n  - id: a\n    label: A\n    patterns:\n      - ok\n      - '(bad'\n", 6, "bad regular expression"),
    ("concepts:\n  - id: a\n    label: A\n    mesh: [X123]\n", 4, "not a MeSH descriptor UI"),
    ("concepts:\n  - id: a\n    label: A\n    tree_prefixes: [C4.5]\n", 4, "not a MeSH tree number"),
    ("concepts:\n  - id: a\n    patterns: [x]\n", 2, "needs a 'label'"),
    ("concepts:\n  - id: a\n    label: A\n    synonyms: [x]\n  - id: a\n    label: B\n    synonyms: [y]\n", 5,
     "duplicate concept id"),
    ("concepts:\n  - id: a\n    label: A\n", 2, "nothing to match"),
    ("concept:\n  - id: a\n", 1, "unknown key 'concept'"),
    ("evidence_weights:\n  title: 2\nconcepts:\n  - id: a\n    label: A\n    synonyms: [x]\n", 2, "must be a number"),
])
def test_malformed_lexicon_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ParseError) as err:
        load_lexicon(path)
    assert f"lexicon.yml:{line}:" in str(err.value)
    assert message in str(err.value)


def test_missing_lexicon_file(tmp_path):
    with pytest.raises(ParseError, match="cannot read"):
        load_lexicon(tmp_path / "nope.yml")


def test_mesh_descriptor_file_extends_tree_table(tmp_path):
    (tmp_path / "desc.xml").write_text(textwrap.dedent("""\
        <?xml version="1.0"?>
        <DescriptorRecordSet LanguageCode="eng">
          <DescriptorRecord DescriptorClass="1">
            <DescriptorUI>D000010</DescriptorUI>
            <DescriptorName><String>Gamma Lesion</String></DescriptorName>
            <TreeNumberList><TreeNumber>C97.200.300</TreeNumber></TreeNumberList>
          </DescriptorRecord>
        </DescriptorRecordSet>
        """))
    lex = load_lexicon(write(tmp_path, """\
        mesh_descriptor_file: desc.xml
        concepts:
          - id: c97
            label: C97
            tree_prefixes: [C97.200]
        """))
    assert lex.trees == {"D000010": ("C97.200.300",)}
    assert match_paper({"mesh": [{"ui": "D000010", "name": "Gamma Lesion"}]}, lex)[0][0] == "c97"


def test_descriptor_file_with_entities_is_refused(tmp_path):
    (tmp_path / "desc.xml").write_text('<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
                                       "<DescriptorRecordSet><DescriptorRecord><DescriptorUI>D000011</DescriptorUI>"
                                       "<DescriptorName><String>&x;</String></DescriptorName></DescriptorRecord>"
                                       "</DescriptorRecordSet>")
    path = write(tmp_path, "mesh_descriptor_file: desc.xml\nconcepts:\n  - id: a\n    label: A\n    synonyms: [x]\n")
    try:
        lex = load_lexicon(path)
    except ParseError:
        return
    assert "root:" not in repr(lex.tree_names)


def test_literal_prefilter_changes_no_result(tmp_path):
    """The anchor-literal prefilter only skips regexes that cannot match: same hits as running them all."""
    path = tmp_path / "lex.yml"
    path.write_text(textwrap.dedent(r"""
        concepts:
          - id: a
            label: A
            synonyms: [bone marrow]
            patterns: ['\bmarrow\b', 'diffusion[-\s]weighted']
            case_sensitive_patterns: ['\bAML\b']
          - id: b
            label: B
            patterns: ['(?i)HODGKIN', 'lymph\w+']
          - id: c
            label: C
            patterns: ['(xz|yz)']
    """))
    a, b, c = load_lexicon(path).concepts
    assert a.text_anchors == ("diffusion", "marrow")   # 'bone marrow' contains 'marrow': redundant
    assert a.acronym_anchors == ("AML",)
    assert b.text_anchors is None                 # an inline (?i): literals are not exact, no prefilter
    assert c.text_anchors is None                 # no top-level literal run: no prefilter
    texts = ["Bone Marrow MRI", "marrowless", "Diffusion-Weighted imaging", "AML in children", "aml",
             "HODGKIN lymphoma", "nothing here", "", "XZ", "\ufb01 Marrow"]
    for text in texts:
        for concept in (a, b, c):
            hit = concept.find(text)
            anchors = concept.text_anchors, concept.acronym_anchors
            concept.text_anchors = concept.acronym_anchors = None      # no prefilter
            assert concept.find(text) == hit, (concept.id, text)
            concept.text_anchors, concept.acronym_anchors = anchors
    assert a.find("Bone Marrow MRI") == "Bone Marrow" and a.find("nothing here") is None
