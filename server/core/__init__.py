"""The leaves every layer uses: settings, the rerank job and its ranking, the error kinds, logging,
metrics, tracing, and the state API processes share."""
