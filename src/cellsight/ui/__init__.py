"""The dashboard's presentation: Jinja2 templates (autoescaped), the strings they show, its script and styles.

It knows nothing of HTTP or the service: `cellsight.service.routes.pages` gathers the data and renders
these templates, so the arrow points one way (service -> ui).
"""
