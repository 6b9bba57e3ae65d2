"""scripts/evaluate.py's parts: the BEIR data and TREC runs (data.py), the BM25 first stage
(first_stage.py), reranking through a server's HTTP API (client.py), metrics and significance
(metrics.py). An HTTP client of the server: nothing here imports server/."""
