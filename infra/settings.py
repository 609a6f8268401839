"""Where things live by default.  Every location is a storage URI and can be overridden."""

import os


def default_registry() -> str:
    return os.environ.get("REVIEWS_REGISTRY") or os.path.expanduser("~/.imdb-reviews/registry")


def default_data() -> str:
    return os.environ.get("REVIEWS_DATA", "auto")
