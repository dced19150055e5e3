"""Stage 8 of the pipeline: the web API and page (FastAPI); it parses requests and calls the runtime."""

from pneumoscan.serve.app import create_app

__all__ = ["create_app"]
