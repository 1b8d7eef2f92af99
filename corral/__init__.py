"""corral: run large offline LLM batches on a Celery fleet, inside rate limits, with exact costs."""

__version__ = "0.1.0"
