"""vLLM's engine: its arguments and the resolved deployment, the engine client and its protocol,
what kind of reranker a model is and what is read of its files."""
