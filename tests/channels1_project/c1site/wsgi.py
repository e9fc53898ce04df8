import os

import geventchannels.compat

geventchannels.compat.install()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "c1site.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
