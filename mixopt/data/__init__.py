"""Corpora: domains of documents -> train/val token shards on disk, memory-mapped.

``prepare_corpus`` builds (or reuses) a corpus from a recipe (``pip``, ``debian`` or a
folder with one subfolder per domain); ``Corpus.open`` reads one. The on-disk manifest
(format 1) is described in :mod:`mixopt.data.corpus`.
"""

from mixopt.data.corpus import (
    Corpus,
    corpus_path_for,
    default_cache_dir,
    prepare_corpus,
    split_documents,
)
from mixopt.data.recipes import RECIPES, pip_sources, resolve_recipe
from mixopt.data.sources import Document, DomainSource, folder_sources, select_documents

__all__ = [
    "RECIPES",
    "Corpus",
    "Document",
    "DomainSource",
    "corpus_path_for",
    "default_cache_dir",
    "folder_sources",
    "pip_sources",
    "prepare_corpus",
    "resolve_recipe",
    "select_documents",
    "split_documents",
]
