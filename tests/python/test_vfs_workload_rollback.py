"""1,000,000 rows through the sharding VFS in rollback-journal mode: create,
insert, index, update, delete, vacuum give the same results as through the
default VFS (vfs_workload.py).

  AERIALS_EXTENSION=build/aerials.so PYTHONPATH=python \\
      /usr/bin/python3 -m unittest -v test_vfs_workload_rollback   (from tests/python)
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vfs_testlib  # noqa: E402
import vfs_workload  # noqa: E402


class WorkloadRollbackTest(vfs_testlib.VfsTestCase):

    def test_million_rows(self):
        vfs_workload.compare(self, 1_000_000, "delete", "16M")


if __name__ == "__main__":
    unittest.main()
