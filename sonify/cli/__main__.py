"""``python -m sonify.cli``: the same as the ``sonify`` command."""

from . import main

main()
