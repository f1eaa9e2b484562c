"""The examples in docs/online.md and in the package's docstrings run as written."""

import doctest
import re
from pathlib import Path

import pytest

import mixopt.online
import mixopt.online.registry
import mixopt.online.sampler

DOC = Path(__file__).resolve().parents[2] / "docs" / "online.md"


def test_the_doc_page_runs_on_a_tiny_pytorch_model(capsys):
    torch = pytest.importorskip("torch")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    remote = [b for b in blocks if "Client(" in b]  # needs `mixopt serve`: tests/serve/test_mixers.py runs those calls
    blocks = [b for b in blocks if b not in remote]
    assert len(blocks) == 3 and len(remote) == 1  # the loop, checkpoints, DoReMi: every one runs here
    loop = blocks[0].splitlines()
    assert len([line for line in loop if line.strip()]) <= 28  # a short example
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared two-core machine: one thread is faster
    try:
        ns: dict = {}
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), ns)
    finally:
        torch.set_num_threads(threads)
    aioli, doremi = ns["mixer"], ns["doremi"]
    assert aioli.step == 100 and aioli.stats()["evals"] == 6 and aioli.stats()["updates"] == 2
    assert doremi.step == 10 and doremi.stats()["updates"] == 10
    assert "{'code':" in capsys.readouterr().out


@pytest.mark.parametrize("module", [mixopt.online, mixopt.online.registry, mixopt.online.sampler])
def test_docstring_examples(module):
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
