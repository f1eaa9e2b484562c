"""The ``debian`` recipe: domains from Debian packages (needs ``apt-get``; run ``apt-get update`` once).

Packages are fetched with ``apt-get download`` into ``<cache>/debian/debs`` and unpacked with
``dpkg-deb -x`` into ``<cache>/debian/root/<package>`` (no maintainer scripts, no root).
Downloads happen lazily, the first time a domain's units are listed.

Not included: ``r-cran-janeaustenr`` (texts are serialized R data) and ``bible-kjv-text``
(a custom compressed format) have no plain-text form to read without their tools.
"""

from __future__ import annotations

import functools
import gzip
import html.parser
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from mixopt.core.errors import DataError
from mixopt.data.sources import Document, DomainSource, Unit, file_units, read_text_file, walk_files

CHUNK_BYTES = 32_000  # big files (dictionaries, metamath) are cut into documents of about this size


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise DataError(f"the debian recipe needs `{cmd[0]}` (Debian/Ubuntu only); use recipe 'pip' "
                        "or a folder instead")
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"`{' '.join(cmd)}` failed ({last}); run `apt-get update` and check the "
                        "package name with `apt-cache policy NAME`")
    return r.stdout


def _newest(pattern: str, prefer: str | None = None) -> str:
    """The available package matching ``pattern`` (e.g. golang-1.19-src), highest version."""
    names = [n for n in _run(["apt-cache", "pkgnames"]).split() if re.fullmatch(pattern, n)]
    if prefer in names:
        return prefer
    if not names:
        raise DataError(f"no Debian package matches {pattern!r}; run `apt-get update`")
    return max(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])


def fetch(package: str, cache: Path) -> Path:
    """Download and unpack ``package`` once; returns the folder it was unpacked into."""
    root = cache / "root" / package
    if (root / ".complete").exists():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for old in debs.glob(f"{package}_*.deb"):
        old.unlink()
    _run(["apt-get", "download", package], cwd=debs)
    deb = next(debs.glob(f"{package}_*.deb"), None)
    if deb is None:
        raise DataError(f"`apt-get download {package}` wrote no .deb into {debs}")
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    (tmp / ".complete").write_text(deb.name)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    deb.unlink()
    return root


# ----------------------------------------------------------------------------- text cleanup

_ROFF_INLINE = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\[*]\(..|\\[*].|\\[&/,:|^%]|\\s[-+]?\d")
_ROFF_CHARS = {r"\-": "-", r"\(aq": "'", r"\(em": "—", r"\(en": "–", r"\(dq": '"', r"\(lq": "“",
               r"\(rq": "”", r"\(bu": "•", r"\(co": "©", r"\e": "\\", r"\ ": " ", r"\~": " "}


def roff_to_text(src: str) -> str:
    """Readable text of a man page: macros dropped (headings and font macros keep their words)."""
    lines = []
    for line in src.splitlines():
        if line.startswith((".\\\"", "'\\\"")):
            continue
        if line.startswith((".", "'")):
            m = re.match(r"[.'](SH|SS|B|I|BR|IR|RB|RI|BI|IB|TP|IP|TH)\b\s*(.*)", line)
            if not m or not m.group(2) or m.group(1) in ("TP", "TH"):
                continue
            line = m.group(2).replace('"', "")
        for k, v in _ROFF_CHARS.items():
            line = line.replace(k, v)
        lines.append(_ROFF_INLINE.sub("", line))
    return "\n".join(lines).strip()


class _HTMLText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):  # noqa: ANN001
        self.skip -= tag in ("script", "style") and self.skip > 0
        if tag in ("p", "div", "li", "h1", "h2", "h3", "pre", "tr", "br"):
            self.parts.append("\n")

    def handle_data(self, data):  # noqa: ANN001
        if not self.skip:
            self.parts.append(data)


def html_to_text(src: str) -> str:
    p = _HTMLText()
    p.feed(src)
    text = re.sub(r"[ \t]+", " ", "".join(p.parts))
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def _gunzip(path: Path) -> str:
    try:
        return gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot decompress ({e})") from None


def _chunked(path: Path, doc_id: str, read: Callable[[Path], str]) -> Iterator[Document]:
    """Documents of about CHUNK_BYTES, cut at line boundaries."""
    buf: list[str] = []
    size = k = 0
    for line in read(path).splitlines(keepends=True):
        buf.append(line)
        size += len(line)
        if size >= CHUNK_BYTES and not line.strip():
            yield Document(f"{doc_id}#{k}", "".join(buf))
            buf, size, k = [], 0, k + 1
    if buf:
        yield Document(f"{doc_id}#{k}", "".join(buf))


def _wordnet(path: Path) -> str:
    """``word, word: gloss`` per synset line of a WordNet ``data.*`` file (license header dropped)."""
    out = []
    for line in read_text_file(path, strict=False).splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        f = head.split()
        words = [f[4 + 2 * i].replace("_", " ") for i in range(int(f[3], 16))]
        out.append(f"{', '.join(words)}: {gloss.strip()}\n" + ("\n" if len(out) % 20 == 19 else ""))
    return "".join(out)


# ----------------------------------------------------------------------------- domains

def _units_of(pkg: str | Callable[[], str], cache: Path, build: Callable[[Path], list[Unit]]) -> Callable[[], list[Unit]]:
    def units() -> list[Unit]:
        name = pkg() if callable(pkg) else pkg
        out = build(fetch(name, cache))
        if not out:
            raise DataError(f"Debian package {name} unpacked in {cache / 'root' / name} has no "
                            "files this recipe reads")
        return out
    return units


def _chunk_units(root: Path, suffixes: tuple[str, ...], read: Callable[[Path], str]) -> list[Unit]:
    return [Unit(rel, size, functools.partial(_chunked, p, rel, read)) for rel, p, size in walk_files(root, suffixes)]


def debian_sources(cache: Path) -> list[DomainSource]:
    """Twelve Debian-package domains (downloaded lazily into ``cache``)."""
    py = f"python3.{sys.version_info.minor}-doc"

    def go(root: Path) -> list[Unit]:
        src = next((root / "usr/share").glob("go-*/src"), None) or next((root / "usr/lib").glob("go-*/src"))
        return file_units(src, (".go",), "go/", skip_dirs=frozenset({"testdata"}),
                          skip=lambda rel: rel.endswith("_test.go"))

    spec = [
        ("go", lambda: _newest(r"golang-1\.\d+-src"), go, "Go standard library sources"),
        ("pyrst", lambda: _newest(r"python3\.\d+-doc", py),
         lambda r: file_units(next((r / "usr/share/doc").glob("python3*/html/_sources")), (".rst.txt",), "rst/"),
         "Python documentation (reST sources)"),
        ("manpages", "manpages", _man("man"), "Linux man pages (English)"),
        ("gcide", "dict-gcide", lambda r: _chunk_units(r / "usr/share/dictd", (".dict.dz",), _gunzip),
         "GNU Collaborative International Dictionary of English"),
        ("foldoc", "dict-foldoc", lambda r: _chunk_units(r / "usr/share/dictd", (".dict.dz",), _gunzip),
         "Free On-line Dictionary of Computing"),
        ("wordnet", "wordnet-base",
         lambda r: [u for u in _chunk_units(r / "usr/share/wordnet", (".noun", ".verb", ".adj", ".adv"), _wordnet)
                    if u.id.startswith("data.")], "WordNet 3.0 glosses"),
        ("metamath", "metamath-databases",
         lambda r: _chunk_units(r / "usr/share/metamath", (".mm",), lambda p: read_text_file(p, strict=False)),
         "Metamath formal proofs"),
        ("man_de", "manpages-de", _man("de"), "man pages in German"),
        ("man_fr", "manpages-fr", _man("fr"), "man pages in French"),
        ("man_ja", "manpages-ja", _man("ja"), "man pages in Japanese"),
        ("man_zh", "manpages-zh", _man("zh"), "man pages in Chinese"),
        ("handbook", "debian-handbook",
         lambda r: file_units(r / "usr/share/doc/debian-handbook/html", (".html",), "", html_to_text),
         "The Debian Administrator's Handbook (27 languages, HTML)"),
    ]
    return [DomainSource(name, f"debian:{pkg if isinstance(pkg, str) else 'auto'} {desc}",
                         _units_of(pkg, cache, build), "debian-v1")
            for name, pkg, build, desc in spec]


def _man(prefix: str) -> Callable[[Path], list[Unit]]:
    """Units for ``usr/share/man/<prefix>*/**.gz`` (``man`` = English, ``de`` = German, ...)."""

    def build(root: Path) -> list[Unit]:
        base = root / "usr/share/man"
        return [Unit(rel, size, functools.partial(_man_docs, p, rel))
                for rel, p, size in walk_files(base, (".gz",)) if rel.startswith(prefix)]

    return build


def _man_docs(path: Path, doc_id: str) -> Iterator[Document]:
    yield Document(doc_id, roff_to_text(_gunzip(path)))
