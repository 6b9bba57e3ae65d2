"""The processes: the supervisor (several API processes on one engine), one API process's
life (its engine, its app, uvicorn, its shutdown) and the engine's processes' environment."""
