"""``python -m workcrew``: the command line (see ``workcrew --help``)."""

from workcrew._cli import main

raise SystemExit(main())
