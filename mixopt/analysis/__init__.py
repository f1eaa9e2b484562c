"""The analysis layer: scaling-law math and fits, surrogate scoring (``predict``) and searcher
replay over runs tables (``mixopt fit``, ``mixopt predict``, ``mixopt replay``)."""
