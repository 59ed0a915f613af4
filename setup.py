"""Builds kb's one compiled module, kb/parse/_pubmed_fields.pyx (PubMed XML fields read from lxml's C
API: the hot path of `kb import`); everything else is in pyproject.toml.

The module is optional: without a C compiler kb installs anyway (a warning in pip's build log, shown with -v)
and reads every record with the pure-Python reader (kb/parse/pubmed_xml.py): the same records, more slowly.
Checked with CC=/bin/false: pip exits 0, no module, `kb import` works."""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    """build_ext that warns instead of failing when the compiled reader cannot be built."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc):
        print(f"warning: kb's compiled PubMed XML reader was not built ({exc}); "
              "kb import will use the pure-Python reader", file=sys.stderr)


def extensions():
    try:
        import lxml
        from Cython.Build import cythonize
    except ImportError as exc:
        print(f"warning: cannot build kb's compiled PubMed XML reader ({exc})", file=sys.stderr)
        return []
    ext = Extension("kb.parse._pubmed_fields", ["kb/parse/_pubmed_fields.pyx"],
                    include_dirs=lxml.get_include(), extra_compile_args=["-O2"])
    return cythonize([ext], quiet=True, compiler_directives={"language_level": 3})


setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext})
