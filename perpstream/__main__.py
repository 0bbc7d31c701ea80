"""``python -m perpstream`` is the ``perpstream`` command."""

from perpstream.cli import main

raise SystemExit(main())
