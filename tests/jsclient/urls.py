"""Two empty pages that load the client, as an ES module and as a classic script."""

from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import path

MODULE_PAGE = """<!doctype html><title>module</title>
<script type="module">
import * as client from "%s";
window.client = client;
window.ready = true;
</script>"""

CLASSIC_PAGE = """<!doctype html><title>classic</title>
<script src="%s"></script>
<script>window.client = window.geventchannels; window.ready = true;</script>"""


def module_page(request):
    return HttpResponse(MODULE_PAGE % static("geventchannels/js/websocketbridge.js"))


def classic_page(request):
    return HttpResponse(CLASSIC_PAGE % static("geventchannels/js/websocketbridge.classic.js"))


urlpatterns = [path("module/", module_page), path("classic/", classic_page)]
