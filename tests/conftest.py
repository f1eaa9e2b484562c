import os
import random
import socket
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray >= 2.60 enables token auth for ray start/job submit
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

WORDS = {
    "code": "def return import class self for in if else while print lambda yield none true".split(),
    "legal": "license warranty permission copyright holder liability notice software granted terms".split(),
    "prose": "the king and queen walked into a quiet garden where birds sang of summer rain".split(),
    "math": "let x be an integer prime divides then sum over n of squares equals theorem proof".split(),
}


def write_domains(root: Path, domains=("code", "legal", "prose"), docs: int = 30, words: int = 400) -> Path:
    """A tiny user corpus: one folder per domain of .txt documents with distinct vocabularies."""
    rng = random.Random(0)
    for d in domains:
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(docs):
            text = " ".join(rng.choice(WORDS[d]) for _ in range(words))
            (root / d / f"doc{i:03d}.txt").write_text(text + "\n")
    return root


@pytest.fixture
def tiny_domains(tmp_path) -> Path:
    return write_domains(tmp_path / "domains")


def study_yaml(path: Path, domains: Path, cache: Path, uri: str, out: Path, **extra) -> Path:
    import yaml

    cfg = {
        "study": "tiny", "seed": 0,
        "data": {"recipe": str(domains), "tokenizer": "bytes", "cache_dir": str(cache), "max_mb_per_domain": 1},
        "proxy": {"preset": "dense-0.1m", "tokens": 16384, "seq_len": 64, "batch_size": 8, "eval_batches": 2,
                  "evals": 2},
        "search": {"searcher": "regmix", "n_init": 3, "options": {"surrogate": "linear"}},
        "budget": {"trials": 5},
        "executor": {"kind": "local", "workers": 1},
        "tracking_uri": uri, "output_dir": str(out),
    }
    for k, v in extra.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers a test starts itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float, proc=None) -> None:
    """Poll ``url`` until it answers; fail early if the server process ``proc`` exited."""
    end = time.time() + seconds
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(url)
