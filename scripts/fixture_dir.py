"""Fixture directories the generator scripts own.

A script regenerating `tests/fixtures/.../<name>/` removes only what it wrote there before
(files directly in it or in its subfolders, and the subfolders that leaves empty),
as listed in the directory's marker (`.generated.json`: the script and its files), and
records what it writes now. A directory without a marker that holds anything is someone
else's: refused, nothing touched. A file a user put beside a fixture's files stays.

    users = fixture_dir.claim(path, "scripts/make_x.py")   # before writing
    ...                                                     # write the fixture's files
    fixture_dir.record(path, "scripts/make_x.py", users)   # after
"""

import json
import os

MARKER = ".generated.json"


def _marker(out):
    path = os.path.join(out, MARKER)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def claim(out, script):
    """Makes `out` ready for `script` to write: created if missing, emptied of the files
    `script` listed last time, refused if it holds files no marker accounts for. Returns the
    names left in it (a user's), which `record` leaves out."""
    os.makedirs(out, exist_ok=True)
    marker = _marker(out)
    if marker is None:
        if os.listdir(out):
            raise SystemExit(f"{out}: holds files {script} did not write (no {MARKER}); move them or choose another path")
        return []
    if marker.get("script") != script:
        raise SystemExit(f"{out}: written by {marker.get('script')!r}, not {script!r}; nothing was changed")
    for name in marker.get("files", []):
        path = _inside(out, name)
        # Only plain files inside `out`, as recorded; then the folders they leave empty.
        if path and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            parent = os.path.dirname(path)
            while parent != os.path.normpath(out) and not os.listdir(parent):
                os.rmdir(parent)
                parent = os.path.dirname(parent)
    os.remove(os.path.join(out, MARKER))
    return _files(out)


def _inside(out, name):
    """`out/name` for a relative path that stays inside `out`, else None."""
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        return None
    return os.path.normpath(os.path.join(out, name))


def _files(out):
    """Every plain file under `out`, as a path relative to it (`/`-separated)."""
    found = []
    for root, _, names in os.walk(out):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), out).replace(os.sep, "/")
            if rel != MARKER and os.path.isfile(os.path.join(root, n)):
                found.append(rel)
    return sorted(found)


def record(out, script, before=()):
    """Lists the files now under `out` (except those in `before`, a user's) as `script`'s."""
    files = [f for f in _files(out) if f not in set(before)]
    with open(os.path.join(out, MARKER), "w") as f:
        json.dump({"script": script, "files": files}, f, indent=2)
