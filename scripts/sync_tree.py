#!/usr/bin/env python3
"""Make directory DEST hold exactly the files of SRC, touching only what differs.

Files with identical content keep their modification time, so `make` rebuilds only
what changed. Files in DEST that SRC lacks are removed.
Usage: sync_tree.py SRC DEST
"""

import filecmp
import os
import shutil
import sys


def sync(src: str, dest: str) -> int:
    changed = 0
    wanted = set()
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target_dir = os.path.normpath(os.path.join(dest, rel))
        wanted.add(target_dir)
        os.makedirs(target_dir, exist_ok=True)
        for name in filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(target_dir, name)
            wanted.add(d)
            if not os.path.isfile(d):
                # New file: keep the tarball's times, whose order the distributed
                # generated files (errcodes.h, gram.c, ...) rely on.
                shutil.copy2(s, d)
            elif filecmp.cmp(s, d, shallow=False):
                continue
            else:
                # Changed file: a fresh modification time so make sees the change.
                shutil.copyfile(s, d)
                shutil.copymode(s, d)
            changed += 1
    for dirpath, dirnames, filenames in os.walk(dest, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if p not in wanted:
                os.remove(p)
                changed += 1
        if os.path.normpath(dirpath) not in wanted:
            os.rmdir(dirpath)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    n = sync(sys.argv[1], sys.argv[2])
    print(f"sync_tree: {n} files updated")
