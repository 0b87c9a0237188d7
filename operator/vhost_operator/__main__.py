"""``python -m vhost_operator`` is the ``vhost-operator`` command."""

from vhost_operator.cli import main

raise SystemExit(main())
