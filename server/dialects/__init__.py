"""The request and response models of each API dialect (Cohere/Jina/vLLM's rerank, TEI's rerank,
vLLM's score) and their translation to and from the dialect-free job and ranking."""
