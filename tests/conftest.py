import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_FIXTURES = os.path.join(ROOT, "..", "shared", "fixtures")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A 6-clip synthetic corpus, made once per test session."""
    from preparation.make_synthetic import make_corpus
    out = str(tmp_path_factory.mktemp("corpus"))
    splits = make_corpus(out, num_clips=6, seed=7, min_words=2, max_words=3)
    return out, splits


def run_module(module, *args, cwd=ROOT, timeout=300):
    """Run ``python -m module args`` like a user would; return the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
