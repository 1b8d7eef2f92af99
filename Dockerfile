# One image for every corral process: producer CLI, workers, simulator, Flower.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY corral ./corral
COPY producer ./producer
COPY workers ./workers
COPY simulator ./simulator
RUN pip install --no-cache-dir . flower
# Workers run as an unprivileged user (Celery warns about root).
RUN useradd --create-home corral
USER corral
CMD ["corral", "--help"]
