"""``python -m geventchannels serve proj.wsgi``: the console command (see cli.py)."""

from .cli import main

raise SystemExit(main())
