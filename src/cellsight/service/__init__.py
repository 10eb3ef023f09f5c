"""The inspection service: HTTP inspection, model versions, reviews and the dashboard on one FastAPI app."""
