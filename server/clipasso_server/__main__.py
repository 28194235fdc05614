"""``python -m clipasso_server`` is the ``clipasso`` command."""

import sys

from clipasso_server.cli import main

sys.exit(main())
