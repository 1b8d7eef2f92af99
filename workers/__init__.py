"""corral's Celery workers: thin tasks over a job service that calls providers and files records."""
