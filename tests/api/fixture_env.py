"""The environment the `api` test fixture (serve_fixture.sh) writes: URL, tokens, paths."""
import os


def load_env(path):
    """KEY=VALUE lines, '#' comments, as serve_fixture.sh writes them."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    return env


ENV = load_env(os.environ["GPULEDGER_API_ENV"])
