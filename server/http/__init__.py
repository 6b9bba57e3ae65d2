"""The HTTP edge: the FastAPI app, its routes (thin: they parse and answer), the ASGI middlewares,
the body limit, the error bodies, and the managed platforms' (SageMaker, Vertex AI) routes."""
