"""Run inside the test container by the container's Python: write a file into a home the
way the hub does (``ananke_hub.fsutil.write_file_in_home``), content from stdin.

    python hub_write.py /var/lib/private/u3 some/dir/file.txt < data
"""

import sys

from ananke_hub.fsutil import write_file_in_home

if __name__ == "__main__":
    home, relpath = sys.argv[1], sys.argv[2]
    write_file_in_home(home, relpath, sys.stdin.buffer.read())
