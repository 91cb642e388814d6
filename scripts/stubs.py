"""`make stubs`: buf generate with buf.gen.yaml, less the plugins this machine lacks.

buf.gen.yaml declares every language's plugins once. Go's and Java's come from Debian
packages a fresh machine may not have (clients/go/build.sh and clients/java/build.sh
--missing list them), while the Python and TypeScript client packages need only their own
plugins (PyPI's grpcio-tools, npm's protoc-gen-es). So a plugin that is not installed is left
out with a note, and its clients' tests are skipped as theirs always were, unless
REPOGATE_TEST_REQUIRE_CLIENTS=1 (CI sets it): then every plugin must run.

    python scripts/stubs.py BUF    (from the repository's root)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REQUIRE_ALL = os.environ.get("REPOGATE_TEST_REQUIRE_CLIENTS") == "1"


def runnable(plugin: dict[str, object]) -> str | None:
    """The program a plugin entry needs, when it is not installed; None when it is."""
    if "local" in plugin:
        local = plugin["local"]
        program = str(local[0] if isinstance(local, list) else local)
    elif "protoc_path" in plugin:
        path = plugin["protoc_path"]
        program = str(path[0] if isinstance(path, list) else path)
    else:  # protoc_builtin without protoc_path: protoc on PATH (Debian protobuf-compiler)
        program = "protoc"
    found = Path(program).exists() if "/" in program else shutil.which(program)
    return None if found else program


def main() -> int:
    buf = sys.argv[1]
    template = yaml.safe_load(Path("buf.gen.yaml").read_text())
    kept, missing = [], []
    for plugin in template["plugins"]:
        program = runnable(plugin)
        if program is None:
            kept.append(plugin)
        else:
            missing.append(f"{program} (for {plugin['out']})")
    if missing:
        note = "not installed: " + ", ".join(missing)
        if REQUIRE_ALL:
            print(f"FATAL: {note} (REPOGATE_TEST_REQUIRE_CLIENTS=1)", file=sys.stderr)
            return 1
        print(f"NOTE: {note}; those stubs are not generated", file=sys.stderr)
    template["plugins"] = kept
    env = {**os.environ, "PATH": f"{Path('node_modules/.bin').resolve()}:{os.environ['PATH']}"}
    return subprocess.call([buf, "generate", "--template", json.dumps(template)], env=env)


if __name__ == "__main__":
    sys.exit(main())
