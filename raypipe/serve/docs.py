"""``/docs``: Swagger UI over the replica's ``/openapi.json``, its files served by the replica itself.

The JS and CSS come from the ``swagger-ui-bundle`` package, not a CDN: the page works offline and
sends no visit to another host (its Content-Security-Policy forbids any, and the validator badge,
which would post the document to validator.swagger.io, is off).

    docs_html(openapi_url, assets_url, title) the Swagger UI page
    docs_asset(name)                          (bytes, media type) of one of its assets, or None
"""

from __future__ import annotations

import functools
import html
import json

__all__ = ["DOC_ASSETS", "DOCS_CSP", "docs_asset", "docs_html"]

DOC_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}
"""The Swagger UI files ``/docs`` loads; nothing else from the package is served."""
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
"""``/docs``'s Content-Security-Policy: the browser itself refuses any other host (Swagger UI styles
inline and draws its icons as data: SVGs; the one inline script starts it)."""


def docs_html(openapi_url: str, assets_url: str, title: str) -> str:
    """Swagger UI over ``openapi_url``, its files from ``assets_url``: every operation and model expanded."""
    config = {
        "url": openapi_url,
        "dom_id": "#swagger-ui",
        "layout": "BaseLayout",
        "deepLinking": True,
        "docExpansion": "full",
        "defaultModelRendering": "model",  # request bodies open on their fields, not an example
        "defaultModelsExpandDepth": 4,
        "defaultModelExpandDepth": 4,
        "showExtensions": True,
        "showCommonExtensions": True,
        "validatorUrl": None,  # the badge would send the document to validator.swagger.io
    }
    script = json.dumps(config).replace("<", "\\u003c")
    a = html.escape(assets_url, quote=True)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="stylesheet" href="{a}/swagger-ui.css">
<link rel="icon" type="image/png" href="{a}/favicon-32x32.png">
</head><body><div id="swagger-ui"></div>
<script src="{a}/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle(Object.assign({script}, {{presets: [SwaggerUIBundle.presets.apis]}}));</script>
</body></html>
"""


@functools.cache
def docs_asset(name: str) -> tuple[bytes, str] | None:
    """One of ``DOC_ASSETS`` from the swagger-ui-bundle package, with its media type; None for any other name."""
    if name not in DOC_ASSETS:
        return None
    from swagger_ui_bundle import swagger_ui_path

    return (swagger_ui_path / name).read_bytes(), DOC_ASSETS[name]
