#!/usr/bin/env python
"""manage.py of a Channels 1.x project, plus the one change it needs: compat.install()."""

import os
import sys

if __name__ == "__main__":
    import geventchannels.compat

    geventchannels.compat.install()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "c1site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
