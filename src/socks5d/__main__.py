"""`python -m socks5d` is the `socks5d` command."""

import sys

from socks5d.cli import main

sys.exit(main())
