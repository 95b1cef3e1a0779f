"""Load the aerials SQLite extension into a Python sqlite3 connection.

    import sqlite3, aerials
    conn = sqlite3.connect(":memory:")
    aerials.load(conn)
    conn.execute("CREATE VIRTUAL TABLE kv USING aerials(root='data')")
"""

import os
import sqlite3
import sys

__all__ = ["loadable_path", "load", "ExtensionLoadingUnavailable"]


class ExtensionLoadingUnavailable(RuntimeError):
    """This Python's sqlite3 module was built without extension loading."""


def loadable_path():
    """Path of the aerials extension, without the platform suffix, as
    sqlite3's load_extension() accepts it.

    Looked up in order: $AERIALS_EXTENSION, the package directory (an
    installed copy), the repository's build/ directory.
    """
    candidates = []
    env = os.environ.get("AERIALS_EXTENSION")
    if env:
        candidates.append(env)
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "aerials.so"))
    candidates.append(os.path.join(here, "..", "..", "build", "aerials.so"))
    for candidate in candidates:
        if os.path.exists(candidate):
            path = os.path.abspath(candidate)
            return path[:-3] if path.endswith(".so") else path
    raise FileNotFoundError(
        "aerials.so not found; build it (cmake -S . -B build && cmake --build build) "
        "or set AERIALS_EXTENSION to its path. Looked in: " + ", ".join(candidates))


def load(conn):
    """Load the extension into `conn` (a sqlite3.Connection)."""
    if not hasattr(conn, "enable_load_extension"):
        raise ExtensionLoadingUnavailable(
            "the sqlite3 module of %s was built without extension loading "
            "(pyenv builds are); use Debian's /usr/bin/python3" % sys.executable)
    conn.enable_load_extension(True)
    try:
        conn.load_extension(loadable_path())
    finally:
        conn.enable_load_extension(False)
