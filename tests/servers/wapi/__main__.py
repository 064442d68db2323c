"""``python -m tests.servers.wapi``: serve the stand-in (see tests.servers.wapi)."""

import sys

from tests.servers.wapi.server import main

sys.exit(main())
